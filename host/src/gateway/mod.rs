//! Policies the host applies at the edge, before a component runs, as an
//! app's `[application.tool.trellis]` configures them: credentials
//! ([`auth`]) and cross-origin requests ([`cors`]).

pub mod auth;
pub mod cors;

use anyhow::Result;

use crate::capabilities::variables::AppVariables;
use crate::manifest::AppManifest;

/// An app's edge policies, built once per app load.
#[derive(Default)]
pub struct Gateway {
    pub auth: Option<auth::Auth>,
    pub cors: Option<tower_http::cors::CorsLayer>,
}

impl Gateway {
    pub fn load(manifest: &AppManifest, variables: &AppVariables) -> Result<Self> {
        let settings = &manifest.application.trellis;
        Ok(Self {
            auth: settings
                .auth
                .as_ref()
                .map(|policy| auth::Auth::load(policy, &manifest.application.http_base, variables))
                .transpose()?,
            cors: settings.cors.as_ref().map(cors::layer).transpose()?,
        })
    }
}
