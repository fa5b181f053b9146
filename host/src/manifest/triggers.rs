//! Validation of `[[trigger.http]]` and `[[trigger.amqp]]` entries.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use toml::{Spanned, Value};

use super::component::in_range;
use super::error::{ManifestError, Source};
use super::model::{AmqpDefaults, AmqpTrigger, Component, HttpRoute, HttpTrigger};
use super::schema::{RawAmqpTrigger, RawHttpTrigger};
use crate::routing;

type Components = BTreeMap<String, Component>;

pub(crate) fn resolve_http(
    src: Source<'_>,
    raw: Vec<Spanned<RawHttpTrigger>>,
    components: &Components,
) -> Result<Vec<HttpTrigger>, ManifestError> {
    // route key -> (component, route as written, its span) of the first trigger using it.
    let mut seen: HashMap<String, (String, String, Range<usize>)> = HashMap::new();
    let mut triggers = Vec::with_capacity(raw.len());
    for spanned in raw {
        let span = spanned.span();
        let raw = spanned.into_inner();
        for (field, value, hint) in [
            (
                "components",
                &raw.components,
                "name one component with `component = \"<id>\"`",
            ),
            (
                "static_response",
                &raw.static_response,
                "serve the response from a component",
            ),
        ] {
            if let Some(value) = value {
                return Err(src.error(
                    value.span(),
                    format!("`{field}` in [[trigger.http]] is not supported by trellis; {hint}"),
                ));
            }
        }
        if let Some(executor) = &raw.executor {
            check_executor(src, executor)?;
        }
        let Some(component) = &raw.component else {
            return Err(src.error(
                span,
                "[[trigger.http]] has no `component`; expected `component = \"<component id>\"`",
            ));
        };
        let component = component_ref(src, component, components)?;
        let route = route(src, &raw.route)?;
        if let HttpRoute::Path(path) = &route {
            let key = routing::route_key(path);
            if let Some((first_component, first_route, first_span)) = seen.get(&key) {
                return Err(src.error(
                    raw.route.span(),
                    format!(
                        "route {path:?} of component `{component}` is the same as route {first_route:?} of component `{first_component}` (line {}); each route may be used once",
                        src.line(first_span.start)
                    ),
                ));
            }
            seen.insert(key, (component.clone(), path.clone(), raw.route.span()));
        }
        triggers.push(HttpTrigger {
            id: raw.id.map(Spanned::into_inner),
            component,
            route,
        });
    }
    Ok(triggers)
}

pub(crate) fn resolve_amqp(
    src: Source<'_>,
    raw: Vec<Spanned<RawAmqpTrigger>>,
    components: &Components,
    defaults: Option<&AmqpDefaults>,
) -> Result<Vec<AmqpTrigger>, ManifestError> {
    let default_exchange = defaults.and_then(|d| d.exchange.as_ref());
    let mut triggers = Vec::with_capacity(raw.len());
    for spanned in raw {
        let raw = spanned.into_inner();
        let component = defined_component(
            src,
            raw.component.get_ref(),
            raw.component.span(),
            components,
        )?;
        if raw.queue.get_ref().trim().is_empty() {
            return Err(src.error(
                raw.queue.span(),
                "`queue` is empty; expected a queue name, e.g. \"orders.created\"",
            ));
        }
        let binding_keys = match raw.binding_keys {
            Some(keys)
                if !keys.get_ref().is_empty()
                    && raw.exchange.is_none()
                    && default_exchange.is_none() =>
            {
                return Err(src.error(
                    keys.span(),
                    "`binding_keys` needs an exchange to bind to; set `exchange` here or in [application.trigger.amqp]",
                ));
            }
            Some(keys) => keys.into_inner(),
            None => Vec::new(),
        };
        triggers.push(AmqpTrigger {
            id: raw.id.map(Spanned::into_inner),
            component,
            queue: raw.queue.into_inner(),
            exchange: raw.exchange,
            binding_keys,
            prefetch: in_range(src, "prefetch", raw.prefetch, 1, None, "")?,
            max_attempts: in_range(src, "max_attempts", raw.max_attempts, 1, None, "")?,
            retry_delay_ms: raw.retry_delay_ms,
        });
    }
    Ok(triggers)
}

/// Trigger ids, where given, must be unique across all trigger types.
pub(crate) fn check_unique_ids<'a>(
    src: Source<'_>,
    ids: impl IntoIterator<Item = &'a Spanned<String>>,
) -> Result<(), ManifestError> {
    let mut seen = HashMap::new();
    for id in ids {
        if let Some(first) = seen.insert(id.get_ref().as_str(), id.span()) {
            return Err(src.error(
                id.span(),
                format!(
                    "trigger id `{}` is already used on line {}; trigger ids must be unique",
                    id.get_ref(),
                    src.line(first.start)
                ),
            ));
        }
    }
    Ok(())
}

/// `component = "<id>"`, naming a defined component.
fn component_ref(
    src: Source<'_>,
    value: &Spanned<Value>,
    components: &Components,
) -> Result<String, ManifestError> {
    let id = match value.get_ref() {
        Value::String(id) => id,
        Value::Table(_) => {
            return Err(src.error(
                value.span(),
                "inline component tables (`component = { ... }`) are not supported by trellis; define [component.<id>] and use `component = \"<id>\"`",
            ));
        }
        other => {
            return Err(src.error(
                value.span(),
                format!(
                    "`component` must be a component id string, found {}",
                    other.type_str()
                ),
            ));
        }
    };
    defined_component(src, id, value.span(), components)
}

/// The id itself, if `components` defines it.
fn defined_component(
    src: Source<'_>,
    id: &str,
    span: Range<usize>,
    components: &Components,
) -> Result<String, ManifestError> {
    if components.contains_key(id) {
        return Ok(id.to_string());
    }
    let defined = if components.is_empty() {
        "no components are defined".to_string()
    } else {
        format!(
            "defined components: {}",
            components
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(src.error(
        span,
        format!("trigger refers to component `{id}`, which is not defined ({defined})"),
    ))
}

fn route(src: Source<'_>, value: &Spanned<Value>) -> Result<HttpRoute, ManifestError> {
    const EXPECTED: &str = "expected a path like \"/api/...\" or `{ private = true }`";
    match value.get_ref() {
        Value::String(path) => {
            routing::check_route(path).map_err(|e| src.error(value.span(), e))?;
            Ok(HttpRoute::Path(path.clone()))
        }
        Value::Table(table) => match (table.get("private"), table.len()) {
            (Some(Value::Boolean(true)), 1) => Ok(HttpRoute::Private),
            (Some(Value::Boolean(false)), 1) => Err(src.error(
                value.span(),
                format!("`route = {{ private = false }}` is not allowed; {EXPECTED}"),
            )),
            _ => Err(src.error(
                value.span(),
                format!("`route` table may only hold `private = true`; {EXPECTED}"),
            )),
        },
        other => Err(src.error(
            value.span(),
            format!(
                "`route` must be a string or table, found {}; {EXPECTED}",
                other.type_str()
            ),
        )),
    }
}

/// Spin's `executor`: `{ type = "spin" }` (or its alias `http`) is what
/// Trellis runs anyway; Wagi (CGI-style modules) is not supported.
fn check_executor(src: Source<'_>, executor: &Spanned<Value>) -> Result<(), ManifestError> {
    let kind = match executor.get_ref() {
        Value::Table(table) => table.get("type").and_then(Value::as_str),
        _ => None,
    };
    match kind {
        Some("spin" | "http") => Ok(()),
        Some("wagi") => Err(src.error(
            executor.span(),
            "executor type `wagi` is not supported by trellis, which runs wasi:http components; remove `executor` or use `{ type = \"spin\" }`",
        )),
        Some(other) => Err(src.error(executor.span(), format!("unknown executor type `{other}`; expected `{{ type = \"spin\" }}`"))),
        None => Err(src.error(executor.span(), "`executor` must be a table like `{ type = \"spin\" }`")),
    }
}
