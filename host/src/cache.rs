//! On-disk cache of compiled components.
//!
//! An entry is keyed by the SHA-256 of the component's bytes and by the
//! engine's compatibility hash (wasmtime version, target, compiler settings),
//! so a changed component or an upgraded host never loads stale code. Each
//! entry starts with the SHA-256 of the compiled artifact: wasmtime trusts the
//! bytes it deserializes, so a truncated or corrupted file must be caught here
//! and recompiled rather than loaded.

use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from a valid cache entry; nothing was compiled.
    Cache,
    /// Compiled now (no cache, no entry, or a corrupt entry that was replaced).
    Compiled,
    /// Compiled or loaded earlier by this process (the same bytes in another
    /// component, app or tenant): its code is shared.
    Shared,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Cache => "cache",
            Origin::Compiled => "compiled",
            Origin::Shared => "shared",
        }
    }
}

/// The compiled-component cache; `dir: None` compiles every time.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// Returns the compiled component for `wasm`, from the cache when a valid
    /// entry exists, else compiling it and storing the result.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Result<(Component, Origin)> {
        let Some(dir) = &self.dir else {
            return Ok((compile(engine, wasm)?, Origin::Compiled));
        };
        let path = entry_path(dir, engine, wasm);
        match read_entry(engine, &path) {
            Ok(Some(component)) => return Ok((component, Origin::Cache)),
            Ok(None) => {}
            Err(err) => tracing::warn!(
                entry = %path.display(),
                "discarding corrupt compiled-component cache entry: {err:#}"
            ),
        }
        let component = compile(engine, wasm)?;
        // A cache that cannot be written is a slower start next time, not an error.
        if let Err(err) = write_entry(&component, &path) {
            tracing::warn!(entry = %path.display(), "cannot write compiled-component cache: {err:#}");
        }
        Ok((component, Origin::Compiled))
    }
}

fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component> {
    Component::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .context("compiling the component")
}

fn entry_path(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let engine_hash = hasher.finish();
    let wasm_hash = hex::encode(Sha256::digest(wasm));
    dir.join(format!("{wasm_hash}-{engine_hash:016x}.cwasm"))
}

/// `Ok(None)`: no entry. `Err`: an entry exists but is not usable.
fn read_entry(engine: &Engine, path: &Path) -> Result<Option<Component>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).context("reading the entry"),
    };
    let Some((checksum, artifact)) = bytes.split_at_checked(32) else {
        anyhow::bail!("entry is truncated ({} bytes)", bytes.len());
    };
    if Sha256::digest(artifact).as_slice() != checksum {
        anyhow::bail!("checksum mismatch");
    }
    // SAFETY: the artifact is byte-for-byte what `Component::serialize` wrote
    // (checked above), and wasmtime checks that it was produced by a
    // compatible engine.
    let component = unsafe { Component::deserialize(engine, artifact) }
        .map_err(anyhow::Error::from)
        .context("deserializing the entry")?;
    Ok(Some(component))
}

fn write_entry(component: &Component, path: &Path) -> Result<()> {
    let dir = path.parent().context("cache entry has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let artifact = component
        .serialize()
        .map_err(anyhow::Error::from)
        .context("serializing the component")?;
    // Write to a temporary file and rename it into place, so a concurrent
    // reader (another `trellis` process) sees either no entry or a whole one.
    // Unique per process and write: two writers of one entry must not share
    // (and rename away) each other's temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut file = std::fs::File::create(&tmp).context("creating a temporary entry")?;
    file.write_all(&Sha256::digest(&artifact))?;
    file.write_all(&artifact)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).context("moving the entry into place")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: valid, compiles in milliseconds.
    const EMPTY_COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("engine")
    }

    #[test]
    fn second_load_hits_and_corruption_is_rebuilt() {
        let dir = std::env::temp_dir().join(format!("trellis-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = ComponentCache::new(Some(dir.clone()));
        let engine = engine();

        let (_, first) = cache.load(&engine, EMPTY_COMPONENT).expect("first load");
        assert_eq!(first, Origin::Compiled);
        let (_, second) = cache.load(&engine, EMPTY_COMPONENT).expect("second load");
        assert_eq!(second, Origin::Cache);

        // Flip a byte in the middle of the artifact: detected, recompiled, rewritten.
        let entry = entry_path(&dir, &engine, EMPTY_COMPONENT);
        let mut bytes = std::fs::read(&entry).expect("entry exists");
        let mid = 32 + (bytes.len() - 32) / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&entry, &bytes).expect("corrupt entry");
        let (_, third) = cache
            .load(&engine, EMPTY_COMPONENT)
            .expect("load after corruption");
        assert_eq!(third, Origin::Compiled);
        let (_, fourth) = cache
            .load(&engine, EMPTY_COMPONENT)
            .expect("load after rewrite");
        assert_eq!(fourth, Origin::Cache);

        // A truncated entry is caught the same way.
        std::fs::write(&entry, &bytes[..10]).expect("truncate entry");
        let (_, fifth) = cache
            .load(&engine, EMPTY_COMPONENT)
            .expect("load after truncation");
        assert_eq!(fifth, Origin::Compiled);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
