//! CORS from `[application.tool.trellis.cors]`, implemented by
//! `tower-http`: the host answers preflight requests itself and adds the
//! `Access-Control-*` and `Vary` headers to every answer, the host's own
//! errors included, so browsers can read a `401` or `429`.

use std::time::Duration;

use anyhow::{Context as _, Result};
use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, Any, CorsLayer, ExposeHeaders};

use crate::manifest::CorsPolicy;

/// Builds the layer. The manifest has already refused what `tower-http`
/// would panic on (`*` mixed into a list, credentials with `*`); this checks
/// values again so a policy built by hand fails here, not at a request.
pub fn layer(policy: &CorsPolicy) -> Result<CorsLayer> {
    let wildcard = |values: &[String]| matches!(values, [only] if only == "*");
    if policy.allow_credentials
        && [
            &policy.allowed_origins,
            &policy.allowed_methods,
            &policy.allowed_headers,
            &policy.expose_headers,
        ]
        .iter()
        .any(|values| wildcard(values))
    {
        anyhow::bail!("CORS: credentials cannot be allowed together with `*`");
    }
    let no_star = |values: &[String], field: &str| {
        if values.len() > 1 && values.iter().any(|v| v == "*") {
            anyhow::bail!("CORS: `{field}`: `*` must be the only entry");
        }
        Ok(())
    };
    no_star(&policy.allowed_origins, "allowed_origins")?;
    no_star(&policy.allowed_methods, "allowed_methods")?;
    no_star(&policy.allowed_headers, "allowed_headers")?;
    no_star(&policy.expose_headers, "expose_headers")?;

    let origin = if wildcard(&policy.allowed_origins) {
        AllowOrigin::from(Any)
    } else {
        let origins = policy
            .allowed_origins
            .iter()
            .map(|o| HeaderValue::try_from(o.as_str()).with_context(|| format!("origin {o:?}")))
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(origins)
    };
    let methods = if wildcard(&policy.allowed_methods) {
        AllowMethods::from(Any)
    } else {
        let methods = policy
            .allowed_methods
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()).with_context(|| format!("method {m:?}")))
            .collect::<Result<Vec<_>>>()?;
        AllowMethods::list(methods)
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_credentials(policy.allow_credentials);
    if wildcard(&policy.allowed_headers) {
        layer = layer.allow_headers(AllowHeaders::from(Any));
    } else if !policy.allowed_headers.is_empty() {
        layer = layer.allow_headers(AllowHeaders::list(header_names(&policy.allowed_headers)?));
    }
    if wildcard(&policy.expose_headers) {
        layer = layer.expose_headers(ExposeHeaders::from(Any));
    } else if !policy.expose_headers.is_empty() {
        layer = layer.expose_headers(ExposeHeaders::list(header_names(&policy.expose_headers)?));
    }
    if let Some(secs) = policy.max_age_secs {
        layer = layer.max_age(Duration::from_secs(secs));
    }
    Ok(layer)
}

fn header_names(names: &[String]) -> Result<Vec<HeaderName>> {
    names
        .iter()
        .map(|n| HeaderName::try_from(n.as_str()).with_context(|| format!("header {n:?}")))
        .collect()
}
