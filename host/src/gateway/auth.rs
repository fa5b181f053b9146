//! Credentials at the edge: API keys and JWTs (HS256 with a shared secret,
//! RS256 with a JWKS file), required per route and method as the app's
//! `[application.tool.trellis.auth]` says. A verified request reaches the
//! component with `trellis-subject` and `trellis-auth-scheme` headers, which
//! clients cannot forge (the host strips inbound `trellis-*` headers).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use http::{HeaderMap, HeaderName, Method};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::JwkSet};
use sha2::{Digest as _, Sha256};

use crate::capabilities::variables::AppVariables;
use crate::manifest::{self, ApiKeyScheme, AuthPolicy, AuthScheme, JwtScheme};
use crate::routing::Router;

/// The header a verified subject reaches the component in.
pub const SUBJECT_HEADER: &str = "trellis-subject";
/// The header naming the scheme that verified it (`api_key` or `jwt`).
pub const SCHEME_HEADER: &str = "trellis-auth-scheme";

/// Shorter keys are refused at load: guessable keys are no protection.
const MIN_API_KEY_LEN: usize = 16;
/// RFC 7518 §3.2: an HS256 key of at least the hash's size.
const MIN_HS256_SECRET_LEN: usize = 32;

/// Who a request was verified to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub scheme: AuthScheme,
    pub subject: Arc<str>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No acceptable credential: `401`.
    Unauthorized {
        message: String,
        /// `WWW-Authenticate`, when a bearer token would be accepted.
        challenge: Option<&'static str>,
    },
    /// A good key over its rate: `429` after this long.
    OverRate {
        subject: Arc<str>,
        retry_after: std::time::Duration,
    },
}

/// An app's auth policy, ready to check requests.
pub struct Auth {
    api_key: Option<ApiKeys>,
    jwt: Option<Jwt>,
    default: Vec<AuthScheme>,
    /// Route entries grouped by route; the router's "component" is the index
    /// of the group in `groups`.
    router: Router,
    groups: Vec<Vec<Entry>>,
}

struct Entry {
    /// Empty: every method.
    methods: Vec<Method>,
    require: Vec<AuthScheme>,
}

impl Auth {
    /// Builds the policy: expands key and secret templates, reads the JWKS
    /// file. Fails, naming the setting, on anything unusable.
    pub fn load(
        policy: &AuthPolicy,
        base: &str,
        variables: &AppVariables,
        dir: &std::path::Path,
    ) -> Result<Self> {
        let api_key = policy
            .api_key
            .as_ref()
            .map(|scheme| ApiKeys::load(scheme, variables))
            .transpose()
            .context("[application.tool.trellis.auth.api_key]")?;
        let jwt = policy
            .jwt
            .as_ref()
            .map(|scheme| Jwt::load(scheme, variables, dir))
            .transpose()
            .context("[application.tool.trellis.auth.jwt]")?;

        let mut keys: Vec<String> = Vec::new();
        let mut routes: Vec<String> = Vec::new();
        let mut groups: Vec<Vec<Entry>> = Vec::new();
        for route in &policy.routes {
            let key = crate::routing::route_key(&route.route);
            let index = match keys.iter().position(|k| *k == key) {
                Some(index) => index,
                None => {
                    keys.push(key);
                    routes.push(route.route.clone());
                    groups.push(Vec::new());
                    groups.len() - 1
                }
            };
            let methods = route
                .methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("auth route {:?}: methods", route.route))?;
            if let Some(group) = groups.get_mut(index) {
                group.push(Entry {
                    methods,
                    require: route.require.clone(),
                });
            }
        }
        let names: Vec<String> = (0..routes.len()).map(|i| i.to_string()).collect();
        let router = Router::build(
            base,
            names
                .iter()
                .map(String::as_str)
                .zip(routes.iter().map(String::as_str)),
        )
        .context("[[application.tool.trellis.auth.routes]]")?;
        Ok(Self {
            api_key,
            jwt,
            default: policy.require.clone(),
            router,
            groups,
        })
    }

    /// The schemes `method` on `path` accepts (any one); empty: public.
    /// The most specific route with an entry for the method decides.
    pub fn required(&self, method: &Method, path: &str) -> &[AuthScheme] {
        for found in self.router.matches(path) {
            let Some(group) = found
                .component_id()
                .parse::<usize>()
                .ok()
                .and_then(|i| self.groups.get(i))
            else {
                continue;
            };
            let entry = group
                .iter()
                .find(|e| e.methods.is_empty() || e.methods.contains(method));
            if let Some(entry) = entry {
                return &entry.require;
            }
        }
        &self.default
    }

    /// Checks a request's credentials: `Ok(None)` for a public route.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Verified>, Refused> {
        let required = self.required(method, path);
        if required.is_empty() {
            return Ok(None);
        }
        let mut failure = None;
        for scheme in required {
            let outcome = match scheme {
                AuthScheme::ApiKey => self.api_key.as_ref().and_then(|keys| keys.check(headers)),
                AuthScheme::Jwt => self.jwt.as_ref().and_then(|jwt| jwt.check(headers)),
            };
            match outcome {
                Some(Ok(subject)) => {
                    if let (AuthScheme::ApiKey, Some(keys)) = (scheme, &self.api_key) {
                        keys.admit(&subject)?;
                    }
                    return Ok(Some(Verified {
                        scheme: *scheme,
                        subject,
                    }));
                }
                // The first credential presented and refused explains the 401.
                Some(Err(why)) => {
                    failure.get_or_insert(why);
                }
                None => {}
            }
        }
        let challenge = required.contains(&AuthScheme::Jwt).then_some("Bearer");
        let message = failure.unwrap_or_else(|| self.missing(required));
        Err(Refused::Unauthorized { message, challenge })
    }

    fn missing(&self, required: &[AuthScheme]) -> String {
        let ways: Vec<String> = required
            .iter()
            .map(|scheme| match (scheme, &self.api_key) {
                (AuthScheme::ApiKey, Some(keys)) => format!("an API key in `{}`", keys.header),
                _ => "a bearer token in `Authorization`".to_owned(),
            })
            .collect();
        format!(
            "this route requires a credential: send {}",
            ways.join(" or ")
        )
    }
}

/// The accepted API keys, by SHA-256 digest (a lookup by digest does not
/// reveal by its timing how much of a key matched).
struct ApiKeys {
    header: HeaderName,
    subjects: HashMap<[u8; 32], Arc<str>>,
    /// Per key (by its name), if `rate_per_second` is set.
    rate: Option<governor::DefaultKeyedRateLimiter<Arc<str>>>,
}

impl ApiKeys {
    fn load(scheme: &ApiKeyScheme, variables: &AppVariables) -> Result<Self> {
        let header = HeaderName::try_from(scheme.header.as_str())
            .with_context(|| format!("header {:?}", scheme.header))?;
        let keys =
            manifest::expand_template(&scheme.keys, |name| variables.get(name).map(str::to_owned))
                .map_err(|err| anyhow::anyhow!("keys: {err}"))?;
        let mut subjects = HashMap::new();
        for (n, entry) in keys
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            // Messages name the entry by position and name, never the key.
            let Some((name, key)) = entry.split_once(':').filter(|(n, _)| !n.is_empty()) else {
                bail!("keys: entry {} is not `name:key`", n + 1);
            };
            if !fits_header(name) {
                bail!(
                    "keys: entry {} has a name that cannot be passed in a header",
                    n + 1
                );
            }
            if key.len() < MIN_API_KEY_LEN {
                bail!("keys: the key of `{name}` is shorter than {MIN_API_KEY_LEN} characters");
            }
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            if subjects.insert(digest, Arc::from(name)).is_some() {
                bail!("keys: the key of `{name}` is listed twice");
            }
        }
        if subjects.is_empty() {
            bail!("keys: no `name:key` entries; set the variable the template names");
        }
        let rate = scheme
            .rate_per_second
            .and_then(std::num::NonZeroU32::new)
            .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n)));
        Ok(Self {
            header,
            subjects,
            rate,
        })
    }

    /// Whether the key named `subject` is within its rate.
    fn admit(&self, subject: &Arc<str>) -> Result<(), Refused> {
        use governor::clock::Clock as _;
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        rate.check_key(subject)
            .map_err(|not_until| Refused::OverRate {
                subject: subject.clone(),
                retry_after: not_until.wait_time_from(rate.clock().now()),
            })
    }

    /// `None` when no key was sent.
    fn check(&self, headers: &HeaderMap) -> Option<Result<Arc<str>, String>> {
        let value = headers.get(&self.header)?;
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        Some(
            self.subjects
                .get(&digest)
                .cloned()
                .ok_or_else(|| format!("the API key in `{}` is not valid", self.header)),
        )
    }
}

/// JWT verification keys and rules.
struct Jwt {
    hs256: Option<(DecodingKey, Validation)>,
    /// RS256 keys with their `kid`, from the JWKS file.
    rs256: Vec<(Option<String>, DecodingKey)>,
    rs256_validation: Validation,
}

#[derive(serde::Deserialize)]
struct Claims {
    /// Checked here rather than by `jsonwebtoken`, for a clear message.
    #[serde(default)]
    sub: Option<String>,
}

/// The largest JWKS file an app may name.
const MAX_JWKS_BYTES: u64 = 1 << 20;

impl Jwt {
    fn load(scheme: &JwtScheme, variables: &AppVariables, dir: &std::path::Path) -> Result<Self> {
        let hs256 = match &scheme.secret {
            Some(template) => {
                let secret = manifest::expand_template(template, |name| {
                    variables.get(name).map(str::to_owned)
                })
                .map_err(|err| anyhow::anyhow!("secret: {err}"))?;
                if secret.len() < MIN_HS256_SECRET_LEN {
                    bail!("secret: shorter than {MIN_HS256_SECRET_LEN} bytes, too weak for HS256");
                }
                Some((
                    DecodingKey::from_secret(secret.as_bytes()),
                    validation(Algorithm::HS256, scheme),
                ))
            }
            None => None,
        };
        let rs256 = match &scheme.jwks {
            Some(path) => {
                let bytes = crate::manifest::read_app_file(dir, path, "jwks", MAX_JWKS_BYTES)?;
                let keys = jwks(&bytes).with_context(|| format!("jwks {}", path.display()))?;
                if keys.is_empty() {
                    bail!("jwks {}: no RSA signing keys", path.display());
                }
                keys
            }
            None => Vec::new(),
        };
        Ok(Self {
            hs256,
            rs256,
            rs256_validation: validation(Algorithm::RS256, scheme),
        })
    }

    /// `None` when no bearer token was sent.
    fn check(&self, headers: &HeaderMap) -> Option<Result<Arc<str>, String>> {
        let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let (kind, token) = value.trim().split_once(' ')?;
        if !kind.eq_ignore_ascii_case("bearer") {
            return None;
        }
        Some(self.verify(token.trim()))
    }

    fn verify(&self, token: &str) -> Result<Arc<str>, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "the bearer token is not a well-formed JWT".to_owned())?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => match &self.hs256 {
                Some((key, validation)) => (key, validation),
                None => return Err(refused_algorithm(header.alg)),
            },
            Algorithm::RS256 if !self.rs256.is_empty() => {
                let key = match &header.kid {
                    Some(kid) => self
                        .rs256
                        .iter()
                        .find(|(id, _)| id.as_deref() == Some(kid.as_str())),
                    None if self.rs256.len() == 1 => self.rs256.first(),
                    None => None,
                };
                let Some((_, key)) = key else {
                    return Err("the bearer token's key (`kid`) is not in the key set".to_owned());
                };
                (key, &self.rs256_validation)
            }
            other => return Err(refused_algorithm(other)),
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|err| {
                match err.kind() {
                    ErrorKind::ExpiredSignature => "the bearer token has expired".to_owned(),
                    ErrorKind::ImmatureSignature => "the bearer token is not valid yet".to_owned(),
                    ErrorKind::InvalidSignature => {
                        "the bearer token's signature is not valid".to_owned()
                    }
                    ErrorKind::InvalidIssuer => {
                        "the bearer token's issuer is not accepted".to_owned()
                    }
                    ErrorKind::InvalidAudience => {
                        "the bearer token's audience is not accepted".to_owned()
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!("the bearer token has no `{claim}` claim")
                    }
                    _ => "the bearer token is not valid".to_owned(),
                }
            })?;
        let Some(sub) = data.claims.sub else {
            return Err("the bearer token has no `sub` claim".to_owned());
        };
        if sub.is_empty() || !fits_header(&sub) {
            return Err("the bearer token's `sub` claim is empty or not printable".to_owned());
        }
        Ok(Arc::from(sub))
    }
}

/// Whether a subject can travel in the subject header as is.
fn fits_header(subject: &str) -> bool {
    http::HeaderValue::from_str(subject).is_ok() && subject.trim() == subject
}

fn refused_algorithm(alg: Algorithm) -> String {
    format!("the bearer token is signed with {alg:?}, which this app does not accept")
}

fn validation(algorithm: Algorithm, scheme: &JwtScheme) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = scheme.leeway_secs;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &scheme.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &scheme.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The RSA signing keys of a JWKS document; keys for other uses or of other
/// types are skipped, a malformed RSA key is an error.
fn jwks(bytes: &[u8]) -> Result<Vec<(Option<String>, DecodingKey)>> {
    let set: JwkSet = serde_json::from_slice(bytes).context("not a JWKS document")?;
    let mut keys = Vec::new();
    for (n, jwk) in set.keys.iter().enumerate() {
        let signing = jwk
            .common
            .public_key_use
            .as_ref()
            .is_none_or(|u| *u == jsonwebtoken::jwk::PublicKeyUse::Signature);
        if !signing
            || !matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
            )
        {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).with_context(|| format!("key {}", n + 1))?;
        keys.push((jwk.common.key_id.clone(), key));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
