//! `trellis build`: runs each component's `build.command`, one at a time,
//! showing which component builds, how long it took, and its output when it
//! fails.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::manifest::AppManifest;

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub manifest: super::ManifestArg,
    /// Build only these components (repeatable); default: all.
    #[arg(short = 'c', long = "component")]
    pub components: Vec<String>,
}

impl BuildArgs {
    pub async fn run(self) -> Result<()> {
        let manifest = self.manifest.load()?;
        build(&manifest, &self.components).await
    }
}

/// Builds the named components (all when `only` is empty).
pub async fn build(manifest: &AppManifest, only: &[String]) -> Result<()> {
    for id in only {
        if !manifest.components.contains_key(id) {
            bail!("{}: no component `{id}`", manifest.path.display());
        }
    }
    let mut failed = Vec::new();
    for component in manifest.components.values() {
        if !only.is_empty() && !only.contains(&component.id) {
            continue;
        }
        let Some(build) = &component.build else {
            println!("{}: no build command, skipped", component.id);
            continue;
        };
        let workdir = build
            .workdir
            .clone()
            .unwrap_or_else(|| manifest.dir.clone());
        println!(
            "Building component {} with `{}`",
            component.id, build.command
        );
        let started = Instant::now();
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&workdir)
            .output()
            .await
            .with_context(|| format!("running the build command of `{}`", component.id))?;
        let secs = started.elapsed().as_secs_f64();
        if output.status.success() {
            println!("Finished building {} in {secs:.1}s", component.id);
        } else {
            eprintln!("--- output of the build of {} ---", component.id);
            eprint!("{}", String::from_utf8_lossy(&output.stdout));
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
            eprintln!("--- end of output ---");
            eprintln!(
                "Failed building {} after {secs:.1}s ({})",
                component.id, output.status
            );
            failed.push(component.id.clone());
        }
    }
    if !failed.is_empty() {
        bail!("build failed for: {}", failed.join(", "));
    }
    Ok(())
}
