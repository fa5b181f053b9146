//! `fermyon:spin/variables@2.0.0`: what `spin_sdk::variables::get` calls.
//!
//! Values are resolved once, when the app loads: application variables from
//! `SPIN_VARIABLE_<NAME>` or their default, then each component's templates.
//! A request only looks a name up in an immutable map shared by all requests.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use anyhow::{Result, bail};
use wasmtime::component::{HasData, Linker};

use crate::manifest::{self, AppManifest};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/deps/spin-variables@2.0.0",
        inline: "package trellis:variables-host; world host { import fermyon:spin/variables@2.0.0; }",
        imports: { default: trappable },
    });
}
use generated::fermyon::spin::variables as wit;

/// Application variables after resolution. Secret values never print.
pub struct AppVariables {
    values: BTreeMap<String, String>,
    secrets: Vec<String>,
}

impl fmt::Debug for AppVariables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.values {
            if self.secrets.contains(name) {
                map.entry(name, &"<secret>");
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

impl AppVariables {
    /// Resolves `[variables]`: `SPIN_VARIABLE_<NAME>` from `env`, else the
    /// default. A required variable with no value stops start-up, named.
    pub fn resolve(manifest: &AppManifest, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut values = BTreeMap::new();
        let mut secrets = Vec::new();
        for (name, decl) in &manifest.variables {
            let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
            let value = env(&env_name).or_else(|| decl.default.clone());
            match value {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None if decl.required => bail!(
                    "required variable `{name}` has no value: set {env_name} in the environment"
                ),
                None => {}
            }
            if decl.secret {
                secrets.push(name.clone());
            }
        }
        Ok(Self { values, secrets })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Expands one component's `variables` templates into its value map.
    pub fn component(&self, component: &manifest::Component) -> Result<ComponentVariables> {
        let mut values = HashMap::new();
        for (name, template) in &component.variables {
            let value = manifest::expand_template(template, |var| self.get(var).map(str::to_owned))
                .map_err(|err| {
                    anyhow::anyhow!("component `{}` variable `{name}`: {err}", component.id)
                })?;
            values.insert(name.clone(), value);
        }
        Ok(ComponentVariables(Arc::new(values)))
    }
}

/// One component's variables, shared by all its requests.
#[derive(Clone, Default)]
pub struct ComponentVariables(Arc<HashMap<String, String>>);

impl fmt::Debug for ComponentVariables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Component variables may be built from secrets: names only.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl ComponentVariables {
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self(Arc::new(pairs.into_iter().collect()))
    }
}

/// The borrowed view the generated `Host` trait is implemented on.
pub struct VariablesView<'a>(pub &'a ComponentVariables);

impl wit::Host for VariablesView<'_> {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, wit::Error>> {
        if !valid_name(&name) {
            return Ok(Err(wit::Error::InvalidName(name)));
        }
        Ok(match self.0.0.get(&name) {
            Some(value) => Ok(value.clone()),
            None => Err(wit::Error::Undefined(format!("no variable named `{name}`"))),
        })
    }
}

struct Variables;
impl HasData for Variables {
    type Data<'a> = VariablesView<'a>;
}

/// Adds the variables interface to `linker`; `view` borrows the store's
/// component variables.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> VariablesView<'_>,
) -> Result<()> {
    Ok(wit::add_to_linker::<T, Variables>(linker, view)?)
}

/// Spin's rule for variable names: lower-case letters, digits and `_`,
/// starting with a letter.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::Host as _;

    #[test]
    fn lookup_rules() {
        let vars = ComponentVariables::from_pairs([("region".into(), "eu".into())]);
        let mut view = VariablesView(&vars);
        assert!(matches!(view.get("region".into()).unwrap(), Ok(v) if v == "eu"));
        assert!(matches!(
            view.get("missing".into()).unwrap(),
            Err(wit::Error::Undefined(_))
        ));
        assert!(matches!(
            view.get("Bad-Name".into()).unwrap(),
            Err(wit::Error::InvalidName(_))
        ));
    }

    #[test]
    fn secrets_do_not_print() {
        let vars = AppVariables {
            values: BTreeMap::from([
                ("token".to_string(), "hunter2".to_string()),
                ("region".to_string(), "eu".to_string()),
            ]),
            secrets: vec!["token".into()],
        };
        let printed = format!("{vars:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("eu"), "{printed}");
    }
}
