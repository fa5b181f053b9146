//! Validation and path resolution of `[component.<id>]` tables.

use std::collections::BTreeMap;
use std::path::{Component as PathPart, Path};

use toml::{Spanned, Value};

use super::checks::{
    COMPONENT_ID_RULE, VARIABLE_NAME_RULE, check_env_name, check_outbound_host, is_component_id,
    is_variable_name,
};
use super::error::{ManifestError, Source};
use super::model::{Component, ComponentBuild, ComponentTrellis, FileMount, ManagedDatabase};
use super::schema::{RawBuild, RawComponent, RawComponentTrellis, RawPlacement};
use super::template;

/// Checks one component and makes its paths absolute (relative to `dir`).
/// `declared` says whether an application variable exists.
pub(crate) fn resolve(
    src: Source<'_>,
    id: &Spanned<String>,
    raw: Spanned<RawComponent>,
    dir: &Path,
    declared: &dyn Fn(&str) -> bool,
) -> Result<Component, ManifestError> {
    if !is_component_id(id.get_ref()) {
        return Err(src.error(
            id.span(),
            format!(
                "component id `{}` is invalid: use {COMPONENT_ID_RULE}",
                id.get_ref()
            ),
        ));
    }
    let raw = raw.into_inner();
    reject_unsupported(src, &raw)?;

    let mut variables = BTreeMap::new();
    for (name, value) in raw.variables {
        if !is_variable_name(name.get_ref()) {
            return Err(src.error(
                name.span(),
                format!(
                    "component variable name `{}` is invalid: use {VARIABLE_NAME_RULE}",
                    name.get_ref()
                ),
            ));
        }
        let what = format!("component variable `{}`", name.get_ref());
        check_template(src, &value, &what, declared)?;
        variables.insert(name.into_inner(), value.into_inner());
    }

    let mut environment = BTreeMap::new();
    for (name, value) in raw.environment {
        check_env_name(name.get_ref()).map_err(|e| src.error(name.span(), e))?;
        environment.insert(name.into_inner(), value);
    }

    let mut allowed_outbound_hosts = Vec::with_capacity(raw.allowed_outbound_hosts.len());
    for entry in raw.allowed_outbound_hosts {
        check_outbound_host(entry.get_ref(), declared).map_err(|e| src.error(entry.span(), e))?;
        allowed_outbound_hosts.push(entry.into_inner());
    }

    let files = raw
        .files
        .iter()
        .map(|entry| file_mount(src, entry, dir))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Component {
        id: id.get_ref().clone(),
        description: raw.description,
        source: dir.join(local_source(src, &raw.source)?),
        allowed_outbound_hosts,
        variables,
        environment,
        files,
        exclude_files: raw
            .exclude_files
            .into_iter()
            .map(|pattern| {
                super::checks::app_path(pattern.get_ref()).map_err(|why| {
                    src.error(
                        pattern.span(),
                        format!("`exclude_files` entry {:?} {why}", pattern.get_ref()),
                    )
                })?;
                Ok(pattern.into_inner())
            })
            .collect::<Result<Vec<_>, ManifestError>>()?,
        build: raw.build.map(|b| build(src, b, dir)).transpose()?,
        trellis: limits(src, raw.tool.trellis.unwrap_or_default(), dir)?,
    })
}

/// Checks that a template value is well formed and refers only to declared
/// application variables; `what` names the field in messages.
pub(crate) fn check_template(
    src: Source<'_>,
    value: &Spanned<String>,
    what: &str,
    declared: &dyn Fn(&str) -> bool,
) -> Result<(), ManifestError> {
    let refs = template::references(value.get_ref())
        .map_err(|e| src.error(value.span(), format!("{what}: {e}")))?;
    match refs.iter().find(|name| !declared(name)) {
        Some(unknown) => Err(src.error(
            value.span(),
            format!("{what} refers to undeclared application variable `{unknown}`; declare it in [variables]"),
        )),
        None => Ok(()),
    }
}

/// Spin features Trellis does not implement: accepted when empty or off,
/// rejected by name when used.
fn reject_unsupported(src: Source<'_>, raw: &RawComponent) -> Result<(), ManifestError> {
    let unsupported = [
        (
            "key_value_stores",
            &raw.key_value_stores,
            "key-value stores are not available",
        ),
        (
            "sqlite_databases",
            &raw.sqlite_databases,
            "SQLite databases are not available",
        ),
        (
            "ai_models",
            &raw.ai_models,
            "serverless AI is not available",
        ),
        (
            "dependencies",
            &raw.dependencies,
            "compose dependencies into the component before running it",
        ),
        ("profile", &raw.profile, "build profiles are not available"),
        (
            "allowed_http_hosts",
            &raw.allowed_http_hosts,
            "use `allowed_outbound_hosts`, e.g. [\"https://example.com\"]",
        ),
    ];
    for (field, value, hint) in unsupported {
        if let Some(value) = value
            && !is_empty(value.get_ref())
        {
            return Err(src.error(
                value.span(),
                format!("`{field}` is not supported by trellis: {hint}"),
            ));
        }
    }
    if let Some(inherit) = &raw.dependencies_inherit_configuration
        && *inherit.get_ref()
    {
        return Err(src.error(
            inherit.span(),
            "`dependencies_inherit_configuration = true` is not supported by trellis (component dependencies are not supported); remove it or set it to false",
        ));
    }
    Ok(())
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.is_empty(),
        Value::Table(table) => table.is_empty(),
        Value::String(text) => text.is_empty(),
        Value::Boolean(on) => !on,
        _ => false,
    }
}

fn local_source<'a>(src: Source<'_>, source: &'a Spanned<Value>) -> Result<&'a str, ManifestError> {
    match source.get_ref() {
        Value::String(path) if !path.trim().is_empty() => Ok(path),
        Value::String(_) => Err(src.error(source.span(), "`source` is empty; expected the path of a .wasm file, e.g. \"target/wasm32-wasip2/release/app.wasm\"")),
        Value::Table(table) if ["url", "digest", "registry", "package", "version"].iter().any(|k| table.contains_key(*k)) => Err(src.error(
            source.span(),
            "only local file sources are supported: `source` must be a path string, e.g. \"target/wasm32-wasip2/release/app.wasm\" (URL and registry sources are not)",
        )),
        other => Err(src.error(
            source.span(),
            format!("`source` must be a path string, e.g. \"target/wasm32-wasip2/release/app.wasm\", found {}", other.type_str()),
        )),
    }
}

fn file_mount(
    src: Source<'_>,
    entry: &Spanned<Value>,
    dir: &Path,
) -> Result<FileMount, ManifestError> {
    match entry.get_ref() {
        Value::String(pattern) => {
            let relative = Path::new(pattern);
            let escapes = relative.components().any(|p| !matches!(p, PathPart::Normal(_) | PathPart::CurDir));
            if pattern.is_empty() || escapes {
                return Err(src.error(
                    entry.span(),
                    format!("`files` entry {pattern:?} must be a relative path or glob inside the app directory (no leading `/`, no `..`); use {{ source = \"dir\", destination = \"/path\" }} to mount other directories"),
                ));
            }
            let destination = format!("/{}", pattern.trim_start_matches("./"));
            Ok(FileMount { source: dir.join(relative), destination })
        }
        Value::Table(_) => {
            let placement: RawPlacement = entry
                .get_ref()
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| src.error(entry.span(), format!("`files` entry: {}", e.message())))?;
            if !placement.destination.starts_with('/') {
                return Err(src.error(
                    entry.span(),
                    format!("`files` entry destination {:?} must be an absolute guest path, e.g. \"/assets\"", placement.destination),
                ));
            }
            if placement.source.is_empty() {
                return Err(src.error(entry.span(), "`files` entry source is empty; expected a directory, e.g. \"assets\""));
            }
            if let Err(why) = super::checks::app_path(&placement.source) {
                return Err(src.error(entry.span(), format!("`files` entry source {:?} {why}", placement.source)));
            }
            Ok(FileMount { source: dir.join(placement.source), destination: placement.destination })
        }
        other => Err(src.error(
            entry.span(),
            format!("`files` entries must be a path or glob string, or {{ source = \"dir\", destination = \"/path\" }}; found {}", other.type_str()),
        )),
    }
}

fn build(src: Source<'_>, raw: RawBuild, dir: &Path) -> Result<ComponentBuild, ManifestError> {
    let span = raw.command.span();
    let command = match raw.command.into_inner() {
        Value::String(command) => command,
        Value::Array(commands) if commands.len() > 1 => {
            return Err(src.error(
                span,
                format!(
                    "`command` lists {} commands; trellis runs one build command, so join them with `&&`",
                    commands.len()
                ),
            ));
        }
        // Spin's list form with a single command.
        Value::Array(mut commands) if matches!(commands.first(), Some(Value::String(_))) => {
            match commands.pop() {
                Some(Value::String(command)) => command,
                _ => String::new(),
            }
        }
        other => {
            return Err(src.error(
                span,
                format!(
                    "`command` must be a string, e.g. \"cargo build --release\", found {}",
                    other.type_str()
                ),
            ));
        }
    };
    if command.trim().is_empty() {
        return Err(src.error(
            span,
            "`command` is empty; expected e.g. \"cargo build --release\"",
        ));
    }
    Ok(ComponentBuild {
        command,
        workdir: raw.workdir.map(|w| dir.join(w)),
        watch: raw.watch,
    })
}

fn limits(
    src: Source<'_>,
    raw: RawComponentTrellis,
    dir: &std::path::Path,
) -> Result<ComponentTrellis, ManifestError> {
    let mut databases = std::collections::BTreeMap::new();
    for (name, db) in raw.databases {
        if !super::checks::is_component_id(name.get_ref()) {
            return Err(src.error(
                name.span(),
                format!(
                    "database name `{}` must be lower-case letters, digits, `-` or `_`, starting with a letter",
                    name.get_ref()
                ),
            ));
        }
        let migrations = match db.migrations {
            Some(path) => {
                super::checks::app_path(path.get_ref()).map_err(|why| {
                    src.error(
                        path.span(),
                        format!("`migrations` {:?} {why}", path.get_ref()),
                    )
                })?;
                Some(dir.join(path.get_ref()))
            }
            None => None,
        };
        databases.insert(
            name.into_inner(),
            ManagedDatabase {
                migrations,
                outbox: db.outbox,
            },
        );
    }
    let publish = match raw.messaging.and_then(|m| m.publish) {
        Some(publish) => {
            let span = publish.span();
            let patterns = publish.into_inner();
            for pattern in &patterns {
                if let Err(why) = super::checks::topic_pattern(pattern) {
                    return Err(src.error(span, format!("`publish` pattern {pattern:?} {why}")));
                }
            }
            patterns
        }
        None => Vec::new(),
    };
    Ok(ComponentTrellis {
        databases,
        publish,
        // wasm32 linear memory cannot exceed 4 GiB, so a larger limit is a mistake.
        memory_limit_mib: in_range(
            src,
            "memory_limit_mib",
            raw.memory_limit_mib,
            1,
            Some(4096),
            " (MiB)",
        )?,
        // Upper bounds past any real need: beyond them a deadline overflows
        // `Instant`, a body limit is no limit, and a semaphore panics.
        timeout_ms: in_range(
            src,
            "timeout_ms",
            raw.timeout_ms,
            1,
            Some(86_400_000),
            " (milliseconds)",
        )?,
        max_request_body_bytes: in_range(
            src,
            "max_request_body_bytes",
            raw.max_request_body_bytes,
            1,
            Some(1 << 30),
            " (bytes)",
        )?,
        max_concurrency: in_range(
            src,
            "max_concurrency",
            raw.max_concurrency,
            1,
            Some(100_000),
            "",
        )?,
    })
}

/// Checks an optional numeric setting against `min..=max` (`max` of `None`:
/// no upper bound beyond the type's), naming the field when it is out of range.
pub(crate) fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    src: Source<'_>,
    field: &str,
    value: Option<Spanned<T>>,
    min: T,
    max: Option<T>,
    unit: &str,
) -> Result<Option<T>, ManifestError> {
    let Some(value) = value else { return Ok(None) };
    let n = *value.get_ref();
    let expected = match max {
        Some(max) if n < min || n > max => format!("between {min} and {max}"),
        None if n < min => format!("at least {min}"),
        _ => return Ok(Some(n)),
    };
    Err(src.error(
        value.span(),
        format!("`{field}` must be {expected}{unit}, found {n}"),
    ))
}
