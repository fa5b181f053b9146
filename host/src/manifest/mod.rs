//! Reading Spin manifest v2 (`spin.toml`) into a validated [`AppManifest`].
//!
//! Reading happens in three steps, each with positioned errors:
//! 1. a lenient probe checks `spin_manifest_version` (so a v1 manifest gets
//!    "unsupported version" rather than a pile of unknown-field errors);
//! 2. serde reads the [`schema`] types, which deny unknown fields and keep
//!    spans for everything validated later;
//! 3. [`resolve`] checks ids, routes, templates, hosts and limits, and makes
//!    paths absolute, producing the [`model`] types.
//!
//! Spin fields that Trellis does not implement (`key_value_stores`,
//! `sqlite_databases`, `ai_models`, `dependencies`, Wagi executors, inline
//! components, URL sources, ...) are recognised and rejected by name only when
//! used. `tool.<name>` tables other than `tool.trellis` are ignored, as in Spin.

mod checks;
mod component;
mod error;
mod gateway;
mod model;
mod resolve;
mod schema;
mod tables;
mod template;
mod triggers;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::Deserialize;
use toml::{Spanned, Value};

pub use error::ManifestError;
pub use model::{
    AmqpDefaults, AmqpTrigger, ApiKeyScheme, AppManifest, AppTrellis, Application, AuthPolicy,
    AuthRoute, AuthScheme, CallSettings, Component, ComponentBuild, ComponentTrellis, CorsPolicy,
    FileMount, HttpRoute, HttpTrigger, JwtScheme, ManagedDatabase, Variable,
};
pub use template::expand_template;

/// `path`, a file or directory the manifest in `dir` names, with every
/// symlink resolved, if it is still inside `dir`: a link to `/` or to
/// another tenant's files is refused, naming `field`.
pub fn inside_app_dir(dir: &Path, path: &Path, field: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    let root = std::fs::canonicalize(dir)
        .with_context(|| format!("{field}: reading the app directory {}", dir.display()))?;
    let resolved = std::fs::canonicalize(path)
        .with_context(|| format!("{field}: reading {}", path.display()))?;
    if !resolved.starts_with(&root) {
        anyhow::bail!(
            "{field}: {} leads outside the app directory (to {}); a manifest may only name files inside it",
            path.display(),
            resolved.display()
        );
    }
    Ok(resolved)
}

/// The bytes of a file the manifest in `dir` names (see [`inside_app_dir`]),
/// at most `max` of them.
pub fn read_app_file(dir: &Path, path: &Path, field: &str, max: u64) -> anyhow::Result<Vec<u8>> {
    read_bounded(&inside_app_dir(dir, path, field)?, field, max)
}

/// At most `max` bytes of the regular file at `path` (not a device, a FIFO
/// or a directory); `what` names it in errors.
pub fn read_bounded(path: &Path, what: &str, max: u64) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).with_context(|| format!("{what}: reading {}", path.display()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        anyhow::bail!("{what}: {} is not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{what}: reading {}", path.display()))?;
    if bytes.len() as u64 > max {
        anyhow::bail!("{what}: {} is larger than {max} bytes", path.display());
    }
    Ok(bytes)
}

use error::Source;

/// The manifest version Trellis reads.
const SUPPORTED_VERSION: i64 = 2;

/// Reads, parses and validates the manifest at `path`; relative paths in it
/// are resolved against its directory.
pub fn load(path: &Path) -> Result<AppManifest, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::whole_file(path, format!("cannot read manifest: {e}")))?;
    parse(&text, path)
}

/// Parses and validates manifest `text`. `path` names the file in messages and
/// its directory is the base for relative paths; the file is not read.
pub fn parse(text: &str, path: &Path) -> Result<AppManifest, ManifestError> {
    let src = Source { file: path, text };
    check_version(src)?;
    let raw: schema::RawManifest = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    // `absolute` only fails when the working directory is unknown; the path as
    // given is the best we can do then.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    resolve::resolve(src, raw, path, dir)
}

/// Just enough of a manifest to tell which version it is.
#[derive(Deserialize)]
struct VersionProbe {
    spin_manifest_version: Option<Spanned<Value>>,
    /// Spin's oldest manifests said `spin_version = "1"`.
    spin_version: Option<Spanned<Value>>,
}

fn check_version(src: Source<'_>) -> Result<(), ManifestError> {
    let probe: VersionProbe = toml::from_str(src.text).map_err(|e| src.toml_error(&e))?;
    let Some(version) = probe.spin_manifest_version else {
        if let Some(old) = probe.spin_version {
            return Err(src.error(old.span(), unsupported("1")));
        }
        return Err(src.error(
            0..0,
            format!("missing `spin_manifest_version`; trellis reads version {SUPPORTED_VERSION}: add `spin_manifest_version = {SUPPORTED_VERSION}` at the top"),
        ));
    };
    // Spin v1 wrote the version as a string ("1"); accept either spelling.
    let found = match version.get_ref() {
        Value::Integer(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => {
            return Err(src.error(
                version.span(),
                format!(
                    "`spin_manifest_version` must be the integer {SUPPORTED_VERSION}, found {}",
                    other.type_str()
                ),
            ));
        }
    };
    if found == SUPPORTED_VERSION.to_string() {
        Ok(())
    } else {
        Err(src.error(version.span(), unsupported(&found)))
    }
}

fn unsupported(found: &str) -> String {
    format!("unsupported spin_manifest_version {found}; trellis reads version {SUPPORTED_VERSION}")
}
