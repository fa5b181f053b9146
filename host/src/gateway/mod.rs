//! Policies the host applies at the edge, before a component runs, as an
//! app's `[application.tool.trellis]` configures them: credentials
//! ([`auth`]) and cross-origin requests ([`cors`]).

pub mod auth;
pub mod cors;

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::capabilities::variables::AppVariables;
use crate::manifest::AppManifest;

/// An app's edge policies, built once per app load.
#[derive(Default)]
pub struct Gateway {
    pub auth: Option<auth::Auth>,
    pub cors: Option<tower_http::cors::CorsLayer>,
    /// The app's OpenAPI document, served at `GET /openapi.json`.
    pub openapi: Option<bytes::Bytes>,
}

impl Gateway {
    pub fn load(manifest: &AppManifest, variables: &AppVariables) -> Result<Self> {
        let settings = &manifest.application.trellis;
        Ok(Self {
            auth: settings
                .auth
                .as_ref()
                .map(|policy| {
                    auth::Auth::load(
                        policy,
                        &manifest.application.http_base,
                        variables,
                        &manifest.dir,
                    )
                })
                .transpose()?,
            cors: settings.cors.as_ref().map(cors::layer).transpose()?,
            openapi: settings
                .openapi
                .as_deref()
                .map(|path| openapi(&manifest.dir, path))
                .transpose()?,
        })
    }
}

/// The largest OpenAPI document an app may serve.
const MAX_OPENAPI_BYTES: u64 = 4 << 20;

/// Reads the OpenAPI document, checked to be a JSON object.
fn openapi(dir: &Path, path: &Path) -> Result<bytes::Bytes> {
    let bytes = crate::manifest::read_app_file(
        dir,
        path,
        "[application.tool.trellis] openapi",
        MAX_OPENAPI_BYTES,
    )?;
    let document: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "[application.tool.trellis] openapi: {} is not JSON",
            path.display()
        )
    })?;
    if document.get("openapi").and_then(|v| v.as_str()).is_none() {
        anyhow::bail!(
            "[application.tool.trellis] openapi: {} has no `openapi` version field",
            path.display()
        );
    }
    Ok(bytes.into())
}
