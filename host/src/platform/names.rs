//! Tenant and app names, and the public host names built from them:
//! `<app>.<tenant>.<base domain>`.

use std::fmt;

/// Longest tenant or app name. Both become DNS labels (at most 63 bytes) and
/// prefixes of schemas, roles, exchanges and queues, which have limits of
/// their own.
pub const MAX_NAME: usize = 40;

/// Why a name was refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{name}` is not a valid name: {rule}")]
pub struct InvalidName {
    pub what: &'static str,
    pub name: String,
    pub rule: &'static str,
}

/// Checks a tenant or app name: a DNS label of lower-case letters, digits and
/// inner `-`, 1 to [`MAX_NAME`] characters, starting with a letter.
pub fn check(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let refuse = |rule| {
        Err(InvalidName {
            what,
            name: name.to_owned(),
            rule,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return refuse("it must have 1 to 40 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return refuse("only lower-case letters, digits and `-` are allowed");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return refuse("it must start with a letter");
    }
    if name.ends_with('-') {
        return refuse("it must not end with `-`");
    }
    Ok(())
}

/// An app of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    pub tenant: String,
    pub app: String,
}

impl AppKey {
    pub fn new(tenant: &str, app: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            app: app.to_owned(),
        }
    }

    /// `<tenant>/<app>`, the payload of platform notifications.
    pub fn parse(text: &str) -> Option<Self> {
        let (tenant, app) = text.split_once('/')?;
        Some(Self::new(tenant, app))
    }
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.app)
    }
}

/// Which app a `Host` header names under `base` (`shop.acme.localhost:3000`
/// with base `localhost` is app `shop` of tenant `acme`); `None` for any
/// other host.
pub fn app_of_host(host: &str, base: &str) -> Option<AppKey> {
    let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    let base = base.trim_matches('.').to_ascii_lowercase();
    let head = host.strip_suffix(&base)?.strip_suffix('.')?;
    let (app, tenant) = head.split_once('.')?;
    (check("app", app).is_ok() && check("tenant", tenant).is_ok()).then(|| AppKey::new(tenant, app))
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert!(check("tenant", "acme").is_ok());
        assert!(check("tenant", "acme-2").is_ok());
        for bad in [
            "",
            "Acme",
            "2acme",
            "acme-",
            "ac_me",
            "ac.me",
            &"a".repeat(41),
        ] {
            let err = check("tenant", bad).expect_err(bad);
            assert!(err.to_string().starts_with("tenant `"), "{err}");
        }
    }

    #[test]
    fn hosts_name_an_app_of_a_tenant() {
        let key = |t: &str, a: &str| Some(AppKey::new(t, a));
        assert_eq!(
            app_of_host("shop.acme.localhost", "localhost"),
            key("acme", "shop")
        );
        assert_eq!(
            app_of_host("shop.acme.localhost:3000", "localhost"),
            key("acme", "shop")
        );
        assert_eq!(
            app_of_host("Shop.ACME.localhost.", "localhost"),
            key("acme", "shop")
        );
        assert_eq!(
            app_of_host("shop.acme.apps.example.com", "apps.example.com"),
            key("acme", "shop")
        );
        for other in [
            "localhost",
            "acme.localhost",
            "a.shop.acme.localhost",
            "shop.acme.example.com",
            "shop.acmelocalhost",
            "shop.ac_me.localhost",
            "127.0.0.1:3000",
        ] {
            assert_eq!(app_of_host(other, "localhost"), None, "{other}");
        }
    }
}
