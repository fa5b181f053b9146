//! `allowed_outbound_hosts`: which network destinations a component may reach.
//!
//! Spin's format, `scheme://host[:port]`: `*` for any scheme, host or port;
//! `*.example.com` for any subdomain; a port number or an inclusive range
//! `8000..8010`. Without a port the scheme's default port is meant.
//! Templates (`{{ name }}`) are expanded with the app's variables at load time,
//! so a request only compares strings.

use anyhow::{Context as _, Result, bail};

/// The parsed allow-list of one component. Empty denies everything.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    patterns: Vec<HostPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    scheme: Option<String>,
    host: HostMatch,
    port: PortMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    /// `*.example.com`: stored as `.example.com`.
    Suffix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortMatch {
    Any,
    /// No port written: the scheme's default port.
    Default,
    Range(u16, u16),
}

impl AllowedHosts {
    /// Parses every entry (already template-expanded); an invalid entry is an
    /// error quoting it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        let patterns = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                HostPattern::parse(entry)
                    .with_context(|| format!("invalid allowed_outbound_hosts entry `{entry}`"))
            })
            .collect::<Result<_>>()?;
        Ok(Self { patterns })
    }

    /// Whether `scheme://host:port` may be reached. `port` is `None` when the
    /// request did not name one (the scheme's default applies).
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let port = port.or_else(|| default_port(scheme));
        self.patterns
            .iter()
            .any(|pattern| pattern.matches(scheme, &host, port))
    }
}

impl HostPattern {
    fn parse(entry: &str) -> Result<Self> {
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("expected `scheme://host[:port]`");
        };
        if scheme.is_empty() {
            bail!("the scheme is empty");
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            bail!("a path is not allowed, only `scheme://host[:port]`");
        }
        let (host, port) = split_host_port(rest);
        if host.is_empty() {
            bail!("the host is empty");
        }
        let host = match host {
            "*" => HostMatch::Any,
            _ if host.starts_with("*.") => HostMatch::Suffix(host[1..].to_ascii_lowercase()),
            _ if host.contains('*') => {
                bail!("`*` may only stand for the whole host or a leading label")
            }
            _ => HostMatch::Exact(host.to_ascii_lowercase()),
        };
        let port = match port {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(port) => match port.split_once("..") {
                Some((low, high)) => {
                    let low = parse_port(low)?;
                    let high = parse_port(high)?;
                    if low > high {
                        bail!("port range {low}..{high} is empty");
                    }
                    PortMatch::Range(low, high)
                }
                None => {
                    let port = parse_port(port)?;
                    PortMatch::Range(port, port)
                }
            },
        };
        Ok(Self {
            scheme: (scheme != "*").then(|| scheme.to_ascii_lowercase()),
            host,
            port,
        })
    }

    fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        if let Some(want) = &self.scheme
            && !want.eq_ignore_ascii_case(scheme)
        {
            return false;
        }
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Suffix(suffix) => {
                host.ends_with(suffix.as_str()) && host.len() > suffix.len()
            }
            HostMatch::Exact(exact) => host == exact,
        };
        let port_ok = match self.port {
            PortMatch::Any => true,
            // The scheme already matched, so the request's scheme names the default.
            PortMatch::Default => port.is_some() && port == default_port(scheme),
            PortMatch::Range(low, high) => port.is_some_and(|p| (low..=high).contains(&p)),
        };
        host_ok && port_ok
    }
}

/// Splits `host:port`, keeping bracketed IPv6 literals whole.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

fn parse_port(port: &str) -> Result<u16> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("`{port}` is not a port number"))
}

/// Default ports of the schemes components use.
pub fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        "postgres" | "postgresql" => 5432,
        "mysql" => 3306,
        "redis" => 6379,
        "amqp" => 5672,
        "amqps" => 5671,
        "mqtt" => 1883,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).expect("valid entries")
    }

    #[test]
    fn matching_table() {
        // (allow-list, scheme, host, port, allowed?)
        type Case<'a> = (&'a [&'a str], &'a str, &'a str, Option<u16>, bool);
        let cases: &[Case] = &[
            (&[], "http", "example.com", None, false),
            (&["https://example.com"], "https", "example.com", None, true),
            (
                &["https://example.com"],
                "https",
                "example.com",
                Some(443),
                true,
            ),
            (
                &["https://example.com"],
                "https",
                "example.com",
                Some(8443),
                false,
            ),
            (&["https://example.com"], "http", "example.com", None, false),
            (&["https://example.com"], "https", "EXAMPLE.com", None, true),
            (
                &["https://example.com"],
                "https",
                "api.example.com",
                None,
                false,
            ),
            (
                &["https://*.example.com"],
                "https",
                "api.example.com",
                None,
                true,
            ),
            (
                &["https://*.example.com"],
                "https",
                "example.com",
                None,
                false,
            ),
            (
                &["http://localhost:3000"],
                "http",
                "localhost",
                Some(3000),
                true,
            ),
            (&["http://localhost:3000"], "http", "localhost", None, false),
            (
                &["http://localhost:*"],
                "http",
                "localhost",
                Some(1234),
                true,
            ),
            (
                &["http://localhost:8000..8010"],
                "http",
                "localhost",
                Some(8010),
                true,
            ),
            (
                &["http://localhost:8000..8010"],
                "http",
                "localhost",
                Some(8011),
                false,
            ),
            (&["*://*:*"], "https", "anything.org", Some(1), true),
            (&["*://example.com"], "https", "example.com", None, true),
            (&["*://example.com"], "http", "example.com", None, true),
            (
                &["http://*.spin.internal"],
                "http",
                "user.spin.internal",
                None,
                true,
            ),
            (
                &["http://user.spin.internal"],
                "http",
                "order.spin.internal",
                None,
                false,
            ),
            (
                &["postgres://db.internal"],
                "postgres",
                "db.internal",
                Some(5432),
                true,
            ),
            (&["http://[::1]:8080"], "http", "::1", Some(8080), true),
        ];
        for (entries, scheme, host, port, expected) in cases {
            assert_eq!(
                allowed(entries).allows(scheme, host, *port),
                *expected,
                "{entries:?} vs {scheme}://{host}:{port:?}"
            );
        }
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "example.com",
            "://example.com",
            "http://",
            "http://a*b.com",
            "http://x:0",
            "http://x:9..1",
            "http://x/path",
        ] {
            let err = AllowedHosts::parse(&[bad]).expect_err(bad);
            assert!(format!("{err:#}").contains(bad), "{err:#}");
        }
    }
}
