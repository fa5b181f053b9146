//! `[application.tool.trellis]`: the auth and CORS policies and call
//! settings, checked so that what the host builds from them at load cannot
//! fail on shape.

use std::collections::HashSet;
use std::path::Path;

use toml::Spanned;

use super::component::{check_template, in_range};
use super::error::{ManifestError, Source};
use super::model::{
    ApiKeyScheme, AppTrellis, AuthPolicy, AuthRoute, AuthScheme, CallSettings, CorsPolicy,
    JwtScheme,
};
use super::schema::{RawApiKey, RawAppTrellis, RawAuth, RawCallPolicy, RawCors, RawJwt};
use crate::capabilities::outbound_http::CHAINING_SUFFIX;
use crate::routing;

/// Default header of `[...auth.api_key]`.
const API_KEY_HEADER: &str = "x-api-key";
/// Default clock skew allowed on `exp` and `nbf`.
const JWT_LEEWAY_SECS: u64 = 30;

pub(crate) fn resolve(
    src: Source<'_>,
    raw: RawAppTrellis,
    dir: &Path,
    declared: &dyn Fn(&str) -> bool,
) -> Result<AppTrellis, ManifestError> {
    Ok(AppTrellis {
        auth: raw
            .auth
            .map(|auth| resolve_auth(src, auth, dir, declared))
            .transpose()?,
        cors: raw.cors.map(|cors| resolve_cors(src, cors)).transpose()?,
        calls: raw
            .calls
            .into_iter()
            .map(|(target, raw)| calls(src, target, raw))
            .collect::<Result<_, _>>()?,
        openapi: match raw.openapi {
            Some(path) => Some(file_path(src, &path, "openapi", dir)?),
            None => None,
        },
    })
}

fn calls(
    src: Source<'_>,
    target: Spanned<String>,
    raw: RawCallPolicy,
) -> Result<(String, CallSettings), ManifestError> {
    let name = target.get_ref().to_ascii_lowercase();
    let chained = name
        .strip_suffix(CHAINING_SUFFIX)
        .is_some_and(|id| !id.is_empty() && !id.contains('.'));
    let host_port = name.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(['/', '*']) && port.parse::<u16>().is_ok()
    });
    if !chained && !host_port {
        return Err(src.error(
            target.span(),
            format!(
                "[application.tool.trellis.calls] target {:?} is neither a component (`<id>.spin.internal`) nor `host:port`",
                target.get_ref()
            ),
        ));
    }
    Ok((
        name,
        CallSettings {
            timeout_ms: in_range(src, "timeout_ms", raw.timeout_ms, 1, None, "")?,
            retries: in_range(src, "retries", raw.retries, 0, Some(10), "")?,
            breaker_failures: raw.breaker_failures,
            breaker_open_ms: in_range(src, "breaker_open_ms", raw.breaker_open_ms, 1, None, "")?,
        },
    ))
}

fn resolve_auth(
    src: Source<'_>,
    raw: Spanned<RawAuth>,
    dir: &Path,
    declared: &dyn Fn(&str) -> bool,
) -> Result<AuthPolicy, ManifestError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let api_key = raw
        .api_key
        .map(|key| api_key(src, key.into_inner(), declared))
        .transpose()?;
    let jwt = raw
        .jwt
        .map(|jwt| jwt_scheme(src, jwt, dir, declared))
        .transpose()?;
    let configured = |scheme: AuthScheme| match scheme {
        AuthScheme::ApiKey => api_key.is_some(),
        AuthScheme::Jwt => jwt.is_some(),
    };
    if api_key.is_none() && jwt.is_none() {
        return Err(src.error(
            span,
            "[application.tool.trellis.auth] configures no scheme: add [application.tool.trellis.auth.api_key] or [application.tool.trellis.auth.jwt]",
        ));
    }
    let require = match raw.require {
        Some(list) => schemes(src, list.into_inner(), &configured)?,
        None => Vec::new(),
    };
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut seen = HashSet::new();
    for entry in raw.routes {
        let entry = entry.into_inner();
        let route = entry.route.get_ref();
        routing::check_route(route).map_err(|e| src.error(entry.route.span(), e))?;
        let methods = match entry.methods {
            Some(methods) => {
                let span = methods.span();
                let methods: Vec<String> = methods
                    .into_inner()
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect();
                if methods.is_empty() {
                    return Err(src.error(
                        span,
                        "`methods` is empty; leave it out to cover every method",
                    ));
                }
                if let Some(bad) = methods.iter().find(|m| !is_method(m)) {
                    return Err(
                        src.error(span, format!("`methods`: {bad:?} is not an HTTP method"))
                    );
                }
                methods
            }
            None => Vec::new(),
        };
        for method in methods.iter().map(String::as_str).chain(
            // An entry without methods covers them all: record it as `*`.
            methods.is_empty().then_some("*"),
        ) {
            if !seen.insert((routing::route_key(route), method.to_owned())) {
                return Err(src.error(
                    entry.route.span(),
                    format!(
                        "route {route:?} has two [[application.tool.trellis.auth.routes]] entries for {method}; keep one"
                    ),
                ));
            }
        }
        routes.push(AuthRoute {
            route: route.clone(),
            methods,
            require: schemes(src, entry.require.into_inner(), &configured)?,
        });
    }
    Ok(AuthPolicy {
        require,
        api_key,
        jwt,
        routes,
    })
}

fn schemes(
    src: Source<'_>,
    names: Vec<Spanned<String>>,
    configured: &dyn Fn(AuthScheme) -> bool,
) -> Result<Vec<AuthScheme>, ManifestError> {
    let mut schemes = Vec::with_capacity(names.len());
    for name in names {
        let scheme = match name.get_ref().as_str() {
            "api_key" => AuthScheme::ApiKey,
            "jwt" => AuthScheme::Jwt,
            other => {
                return Err(src.error(
                    name.span(),
                    format!(
                        "unknown auth scheme {other:?} in `require`; use \"api_key\" or \"jwt\""
                    ),
                ));
            }
        };
        if !configured(scheme) {
            return Err(src.error(
                name.span(),
                format!(
                    "`require` names {:?}, but [application.tool.trellis.auth.{}] is not configured",
                    scheme.name(),
                    scheme.name()
                ),
            ));
        }
        if !schemes.contains(&scheme) {
            schemes.push(scheme);
        }
    }
    Ok(schemes)
}

fn api_key(
    src: Source<'_>,
    raw: RawApiKey,
    declared: &dyn Fn(&str) -> bool,
) -> Result<ApiKeyScheme, ManifestError> {
    let header = match raw.header {
        Some(header) => {
            let name = header.get_ref().to_ascii_lowercase();
            if http::HeaderName::try_from(name.as_str()).is_err() {
                return Err(src.error(
                    header.span(),
                    format!(
                        "`header`: {:?} is not a valid header name",
                        header.get_ref()
                    ),
                ));
            }
            if crate::triggers::http::is_reserved_header(&name) {
                return Err(src.error(
                    header.span(),
                    format!("`header`: {name:?} is set by the host; pick another header"),
                ));
            }
            name
        }
        None => API_KEY_HEADER.to_owned(),
    };
    check_template(src, &raw.keys, "`keys`", declared)?;
    Ok(ApiKeyScheme {
        header,
        keys: raw.keys.into_inner(),
        rate_per_second: in_range(src, "rate_per_second", raw.rate_per_second, 1, None, "")?,
    })
}

fn jwt_scheme(
    src: Source<'_>,
    raw: Spanned<RawJwt>,
    dir: &Path,
    declared: &dyn Fn(&str) -> bool,
) -> Result<JwtScheme, ManifestError> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.secret.is_none() && raw.jwks.is_none() {
        return Err(src.error(
            span,
            "[application.tool.trellis.auth.jwt] needs `secret` (HS256) or `jwks` (RS256), or both",
        ));
    }
    if let Some(secret) = &raw.secret {
        check_template(src, secret, "`secret`", declared)?;
    }
    let jwks = match raw.jwks {
        Some(path) => Some(file_path(src, &path, "jwks", dir)?),
        None => None,
    };
    let leeway_secs = match raw.leeway_secs {
        Some(leeway) if *leeway.get_ref() > 3600 => {
            return Err(src.error(
                leeway.span(),
                "`leeway_secs` is over an hour; clock skew that large is a misconfiguration",
            ));
        }
        Some(leeway) => leeway.into_inner(),
        None => JWT_LEEWAY_SECS,
    };
    Ok(JwtScheme {
        secret: raw.secret.map(Spanned::into_inner),
        jwks,
        issuer: raw.issuer,
        audience: raw.audience,
        leeway_secs,
    })
}

fn resolve_cors(src: Source<'_>, raw: Spanned<RawCors>) -> Result<CorsPolicy, ManifestError> {
    let span = raw.span();
    let raw = raw.into_inner();

    let origins_span = raw.allowed_origins.span();
    let allowed_origins = raw.allowed_origins.into_inner();
    if allowed_origins.is_empty() {
        return Err(src.error(
            origins_span,
            "`allowed_origins` is empty; list origins such as \"https://shop.example.com\", or remove [application.tool.trellis.cors]",
        ));
    }
    let any_origin = is_any(&allowed_origins);
    if !any_origin {
        for origin in &allowed_origins {
            check_origin(origin).map_err(|e| src.error(origins_span.clone(), e))?;
        }
    }

    let list = |raw: Option<Spanned<Vec<String>>>,
                field: &str,
                default: &[&str],
                check: fn(&str) -> bool,
                upper: bool|
     -> Result<Vec<String>, ManifestError> {
        let Some(raw) = raw else {
            return Ok(default.iter().map(|s| (*s).to_owned()).collect());
        };
        let span = raw.span();
        let values: Vec<String> = raw
            .into_inner()
            .into_iter()
            .map(|v| {
                if upper {
                    v.to_ascii_uppercase()
                } else {
                    v.to_ascii_lowercase()
                }
            })
            .collect();
        if is_any(&values) {
            return Ok(values);
        }
        if let Some(bad) = values.iter().find(|v| v.as_str() == "*" || !check(v)) {
            let why = if bad == "*" {
                "`*` must be the only entry".to_owned()
            } else {
                format!("{bad:?} is not valid here")
            };
            return Err(src.error(span, format!("`{field}`: {why}")));
        }
        Ok(values)
    };
    let allowed_methods = list(
        raw.allowed_methods,
        "allowed_methods",
        &["GET", "HEAD", "POST"],
        is_method,
        true,
    )?;
    let allowed_headers = list(
        raw.allowed_headers,
        "allowed_headers",
        &[],
        is_header_name,
        false,
    )?;
    let expose_headers = list(
        raw.expose_headers,
        "expose_headers",
        &[],
        is_header_name,
        false,
    )?;
    if raw.allow_credentials {
        let wildcard = [
            ("allowed_origins", any_origin),
            ("allowed_methods", is_any(&allowed_methods)),
            ("allowed_headers", is_any(&allowed_headers)),
            ("expose_headers", is_any(&expose_headers)),
        ]
        .into_iter()
        .find(|(_, any)| *any);
        if let Some((field, _)) = wildcard {
            return Err(src.error(
                span,
                format!(
                    "`allow_credentials = true` cannot be combined with `{field} = [\"*\"]`: browsers refuse it; list the values"
                ),
            ));
        }
    }
    Ok(CorsPolicy {
        allowed_origins,
        allowed_methods,
        allowed_headers,
        expose_headers,
        allow_credentials: raw.allow_credentials,
        max_age_secs: raw.max_age_secs,
    })
}

fn is_any(values: &[String]) -> bool {
    matches!(values, [only] if only == "*")
}

/// `scheme://host[:port]`, as browsers send it in `Origin`.
fn check_origin(origin: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`allowed_origins`: {origin:?} is not an origin; write scheme://host[:port], e.g. \"https://shop.example.com\", or use [\"*\"] alone"
        )
    };
    let uri: http::Uri = origin.parse().map_err(|_| bad())?;
    let plain = uri.scheme().is_some()
        && uri.host().is_some_and(|h| !h.is_empty())
        && origin.matches('/').count() == 2
        && !origin.ends_with('/')
        && !origin.contains(['?', '#', '@']);
    if !plain {
        return Err(bad());
    }
    Ok(())
}

fn is_method(method: &str) -> bool {
    !method.is_empty() && http::Method::from_bytes(method.as_bytes()).is_ok()
}

fn is_header_name(name: &str) -> bool {
    http::HeaderName::try_from(name).is_ok()
}

/// A file the manifest names, resolved against its directory.
fn file_path(
    src: Source<'_>,
    path: &Spanned<String>,
    field: &str,
    dir: &Path,
) -> Result<std::path::PathBuf, ManifestError> {
    if path.get_ref().is_empty() {
        return Err(src.error(
            path.span(),
            format!("`{field}` is empty; give the file's path, relative to the manifest"),
        ));
    }
    super::checks::app_path(path.get_ref())
        .map_err(|why| src.error(path.span(), format!("`{field}` {:?} {why}", path.get_ref())))?;
    Ok(dir.join(path.get_ref()))
}
