//! Turns the raw manifest into the validated model: application settings,
//! variables, components and triggers, in that order (triggers need to know
//! which components exist, everything needs to know which variables do).

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Spanned;

use super::checks::{VARIABLE_NAME_RULE, is_variable_name};
use super::component::{self, in_range};
use super::error::{ManifestError, Source};
use super::gateway;
use super::model::{AmqpDefaults, AppManifest, AppTrellis, Application, Variable};
use super::schema::{RawAmqpDefaults, RawApplication, RawManifest, RawVariable};
use super::tables::TRIGGER_TYPES;
use super::triggers;
use crate::routing;

pub(crate) fn resolve(
    src: Source<'_>,
    raw: RawManifest,
    path: PathBuf,
    dir: PathBuf,
) -> Result<AppManifest, ManifestError> {
    let variables = variables(src, raw.variables)?;
    let declared = |name: &str| variables.contains_key(name);
    let application = application(src, raw.application, &dir, &declared)?;

    let mut components = BTreeMap::new();
    for (id, raw_component) in raw.component {
        let component = component::resolve(src, &id, raw_component, &dir, &declared)?;
        components.insert(id.into_inner(), component);
    }

    if let Some(unknown) = raw.trigger.unknown.first() {
        return Err(src.error(
            unknown.span(),
            format!(
                "unknown trigger type `{}`; trellis supports: {TRIGGER_TYPES}",
                unknown.get_ref()
            ),
        ));
    }
    let http = raw.trigger.http.unwrap_or_default();
    let amqp = raw.trigger.amqp.unwrap_or_default();
    let ids = http.iter().filter_map(|t| t.get_ref().id.as_ref());
    triggers::check_unique_ids(
        src,
        ids.chain(amqp.iter().filter_map(|t| t.get_ref().id.as_ref())),
    )?;
    let http_triggers = triggers::resolve_http(src, http, &components)?;
    let amqp_triggers =
        triggers::resolve_amqp(src, amqp, &components, application.amqp_defaults.as_ref())?;

    Ok(AppManifest {
        path,
        dir,
        application,
        variables,
        http_triggers,
        amqp_triggers,
        components,
    })
}

fn variables(
    src: Source<'_>,
    raw: BTreeMap<Spanned<String>, Spanned<RawVariable>>,
) -> Result<BTreeMap<String, Variable>, ManifestError> {
    let mut variables = BTreeMap::new();
    for (name, spanned) in raw {
        if !is_variable_name(name.get_ref()) {
            return Err(src.error(
                name.span(),
                format!(
                    "variable name `{}` is invalid: use {VARIABLE_NAME_RULE}",
                    name.get_ref()
                ),
            ));
        }
        let span = spanned.span();
        let raw = spanned.into_inner();
        if raw.required && raw.default.is_some() {
            return Err(src.error(
                span,
                format!(
                    "variable `{}` has both `default` and `required = true`; a required variable has no default, so remove one",
                    name.get_ref()
                ),
            ));
        }
        let variable = Variable {
            description: raw.description,
            default: raw.default,
            required: raw.required,
            secret: raw.secret,
        };
        variables.insert(name.into_inner(), variable);
    }
    Ok(variables)
}

fn application(
    src: Source<'_>,
    raw: RawApplication,
    dir: &std::path::Path,
    declared: &dyn Fn(&str) -> bool,
) -> Result<Application, ManifestError> {
    if let Some(unknown) = raw.trigger.unknown.first() {
        return Err(src.error(
            unknown.span(),
            format!(
                "unknown trigger type `{}` in [application.trigger]; trellis supports: {TRIGGER_TYPES}",
                unknown.get_ref()
            ),
        ));
    }
    let http_base = match raw.trigger.http.and_then(|http| http.base) {
        Some(base) => {
            check_base(base.get_ref()).map_err(|e| src.error(base.span(), e))?;
            base.into_inner()
        }
        None => "/".to_string(),
    };
    let amqp_defaults = raw
        .trigger
        .amqp
        .map(|amqp| amqp_defaults(src, amqp, declared))
        .transpose()?;
    Ok(Application {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        authors: raw.authors,
        http_base,
        amqp_defaults,
        trellis: match raw.tool.trellis {
            Some(trellis) => gateway::resolve(src, trellis, dir, declared)?,
            None => AppTrellis::default(),
        },
    })
}

/// The base is a plain path prefix: no wildcard and no captures.
fn check_base(base: &str) -> Result<(), String> {
    routing::check_route(base).map_err(|e| format!("`base`: {e}"))?;
    if base.split('/').any(|s| s == "..." || s.starts_with(':')) {
        return Err(format!(
            "`base` {base:?} must be a plain path prefix such as \"/shop\", without `...` or `:name` segments"
        ));
    }
    Ok(())
}

fn amqp_defaults(
    src: Source<'_>,
    raw: RawAmqpDefaults,
    declared: &dyn Fn(&str) -> bool,
) -> Result<AmqpDefaults, ManifestError> {
    if let Some(broker) = &raw.broker {
        component::check_template(src, broker, "`broker`", declared)?;
    }
    Ok(AmqpDefaults {
        broker: raw.broker.map(Spanned::into_inner),
        exchange: raw.exchange,
        prefetch: in_range(src, "prefetch", raw.prefetch, 1, None, "")?,
        max_attempts: in_range(src, "max_attempts", raw.max_attempts, 1, None, "")?,
        retry_delay_ms: raw.retry_delay_ms,
    })
}
