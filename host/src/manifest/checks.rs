//! Small syntactic rules shared by the manifest validator: identifiers and
//! `allowed_outbound_hosts` entries. Each returns a message (without position);
//! the caller attaches the span of the offending value.

use std::net::{IpAddr, Ipv6Addr};

use super::template;

/// Human-readable form of [`is_variable_name`], for messages.
pub(crate) const VARIABLE_NAME_RULE: &str =
    "lowercase letters, digits and `_`, starting with a letter, e.g. `api_key`";

/// Human-readable form of [`is_component_id`], for messages.
pub(crate) const COMPONENT_ID_RULE: &str = "lowercase letters and digits in words separated by `-` or `_`, starting with a letter, e.g. `cart-api`";

/// `^[a-z][a-z0-9_]*$`: application and component variable names. Spin maps
/// these to environment variables (`SPIN_VARIABLE_API_KEY`), hence the strictness.
pub(crate) fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Kebab- or snake-case: `[a-z0-9]+` words joined by single `-` or `_`,
/// starting with a letter. Component ids appear in file names, log lines and
/// metric labels, so we keep them to a safe alphabet.
pub(crate) fn is_component_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && id.split(['-', '_']).all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// Environment variable names: anything a process environment can carry.
pub(crate) fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        Err(format!(
            "environment variable name {name:?} is invalid: it must be non-empty and contain no `=`"
        ))
    } else {
        Ok(())
    }
}

/// Checks one `allowed_outbound_hosts` entry: `scheme://host[:port]`, where any
/// part may be `*` or a `{{ variable }}` template (whose names must satisfy
/// `declared`). This only rejects obviously malformed entries; the outbound
/// networking layer decides what an entry actually allows.
pub(crate) fn check_outbound_host(
    entry: &str,
    declared: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let fail = |why: &str| {
        format!(
            "invalid allowed_outbound_hosts entry {entry:?}: {why}; expected `scheme://host[:port]`, e.g. \"https://example.com\", \"postgres://db.local:5432\" or \"*://localhost:*\""
        )
    };
    // Templates first: their names must be declared, whatever position they fill.
    let references = template::references(entry).map_err(|e| fail(&e))?;
    if let Some(unknown) = references.iter().find(|name| !declared(name)) {
        return Err(fail(&format!(
            "it refers to undeclared application variable `{unknown}`"
        )));
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        // A whole-entry template (`"{{ db_url }}"`) is checked once its value is known.
        if !references.is_empty() && entry.trim().starts_with("{{") && entry.trim().ends_with("}}")
        {
            return Ok(());
        }
        return Err(fail("it has no scheme"));
    };
    check_scheme(scheme).map_err(|why| fail(&why))?;
    // One trailing slash is tolerated ("https://example.com/"); a path is not.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = split_host_port(rest);
    check_host(host).map_err(|why| fail(&why))?;
    match port {
        Some(port) => check_port(port).map_err(|why| fail(&why)),
        None => Ok(()),
    }
}

fn is_template(part: &str) -> bool {
    part.contains("{{")
}

fn check_scheme(scheme: &str) -> Result<(), String> {
    let mut chars = scheme.chars();
    let valid = scheme == "*"
        || is_template(scheme)
        || (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)));
    if valid {
        Ok(())
    } else if scheme.is_empty() {
        Err("it has an empty scheme".into())
    } else {
        Err(format!(
            "scheme {scheme:?} is not `*` or a URL scheme like `https`"
        ))
    }
}

/// Splits `host[:port]`, honouring bracketed IPv6 hosts (`[::1]:8080`).
fn split_host_port(rest: &str) -> (&str, Option<&str>) {
    if rest.starts_with('[')
        && let Some(end) = rest.find(']')
    {
        let (host, after) = rest.split_at(end + 1);
        return (host, after.strip_prefix(':'));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("it has an empty host".into());
    }
    if host == "*" || is_template(host) {
        return Ok(());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("host {host:?} is not a valid IPv6 address"));
    }
    // CIDR ranges ("10.0.0.0/8") are the one place a `/` may appear.
    if let Some((ip, prefix)) = host.split_once('/') {
        let max = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 32,
            Ok(IpAddr::V6(_)) => 128,
            Err(_) => {
                return Err(format!(
                    "{host:?} has a path; only scheme, host and port are allowed"
                ));
            }
        };
        return match prefix.parse::<u8>() {
            Ok(bits) if bits <= max => Ok(()),
            _ => Err(format!(
                "CIDR prefix in {host:?} must be a number from 0 to {max}"
            )),
        };
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is not `*`, `*.domain`, a host name or an IP address"
        ))
    }
}

fn check_port(port: &str) -> Result<(), String> {
    if port == "*" || is_template(port) {
        return Ok(());
    }
    let number = |p: &str| p.parse::<u16>().ok().filter(|&n| n > 0);
    let valid = match port.split_once("..") {
        Some((low, high)) => matches!((number(low), number(high)), (Some(l), Some(h)) if l <= h),
        None => number(port).is_some(),
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "port {port:?} is not `*`, a number from 1 to 65535 or a range like `8000..8100`"
        ))
    }
}

/// An AMQP topic pattern: dot-separated words, each non-empty, where `*` and
/// `#` may only stand alone as a whole word. `Err` says what is wrong.
/// Most words, and most wildcards, in a routing-key pattern: matching is
/// linear in both, and no real pattern needs more.
const MAX_PATTERN_WORDS: usize = 16;
const MAX_PATTERN_WILDCARDS: usize = 8;

pub(crate) fn topic_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern.is_empty() || pattern.len() > 255 {
        return Err("must be 1..255 bytes, e.g. \"order.*\"");
    }
    let mut wildcards = 0;
    for (n, word) in pattern.split('.').enumerate() {
        if word.is_empty() {
            return Err("has an empty word (`..`, or a leading or trailing `.`)");
        }
        if word != "*" && word != "#" && word.contains(['*', '#']) {
            return Err("uses `*` or `#` inside a word; they must stand alone, e.g. \"order.*\"");
        }
        if n >= MAX_PATTERN_WORDS {
            return Err("has more than 16 words");
        }
        if word == "#" || word == "*" {
            wildcards += 1;
            if wildcards > MAX_PATTERN_WILDCARDS {
                return Err("has more than 8 wildcards (`*`, `#`)");
            }
        }
    }
    Ok(())
}

/// A path a manifest names for the host to read or mount (`files`,
/// `exclude_files`, `migrations`, `openapi`, `jwks`): relative to the app's
/// directory and inside it. Where a tenant's manifest is read, anything
/// else would hand the host's own files (`/`, `../..`) to the tenant.
/// Symlinks are judged where the files are read (see
/// [`crate::manifest::inside_app_dir`]).
pub fn app_path(path: &str) -> Result<(), &'static str> {
    use std::path::Component as Part;
    if path.trim().is_empty() {
        return Err("is empty");
    }
    let parts = std::path::Path::new(path).components();
    for part in parts {
        match part {
            Part::Normal(_) | Part::CurDir => {}
            Part::ParentDir => return Err("must stay inside the app directory (no `..`)"),
            Part::RootDir | Part::Prefix(_) => {
                return Err("must be relative to the manifest's directory (no leading `/`)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["a", "api_key", "a1_b2", "x__y"] {
            assert!(is_variable_name(ok), "{ok}");
        }
        for bad in ["", "1a", "_a", "Api", "a-b", "a b"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
        for ok in ["a", "cart-api", "cart_api", "v2", "a-1-b", "my_app-x"] {
            assert!(is_component_id(ok), "{ok}");
        }
        for bad in [
            "", "1a", "-a", "a-", "a--b", "a__b", "Cart", "a.b", "a b", "é",
        ] {
            assert!(!is_component_id(bad), "{bad}");
        }
    }

    #[test]
    fn outbound_hosts_accepted() {
        let declared = |name: &str| ["host", "port", "db_url"].contains(&name);
        for ok in [
            "https://example.com",
            "https://example.com/",
            "http://localhost:3000",
            "*://*:*",
            "https://*",
            "https://*.example.com",
            "postgres://db.local:5432",
            "amqp://broker:5672",
            "mysql://127.0.0.1:3306",
            "redis://[::1]:6379",
            "http://self",
            "http://10.0.0.0/8:80",
            "https://example.com:8000..8100",
            "https://{{ host }}",
            "https://{{ host }}:{{ port }}",
            "https://api-{{ host }}.example.com",
            "{{ db_url }}",
        ] {
            assert_eq!(check_outbound_host(ok, declared), Ok(()), "{ok}");
        }
    }

    #[test]
    fn outbound_hosts_rejected_with_entry_quoted() {
        let declared = |name: &str| name == "host";
        for (bad, why) in [
            ("example.com", "no scheme"),
            ("://example.com", "empty scheme"),
            ("https://", "empty host"),
            ("https://:443", "empty host"),
            ("1http://x", "scheme"),
            ("https://example.com/api", "path"),
            ("https://exa mple.com", "host"),
            ("https://example..com", "host"),
            ("https://x:0", "port"),
            ("https://x:70000", "port"),
            ("https://x:9..1", "port"),
            ("https://x:abc", "port"),
            ("https://[zz]:1", "IPv6"),
            ("https://10.0.0.0/40", "CIDR"),
            (
                "https://{{ nope }}",
                "undeclared application variable `nope`",
            ),
            ("https://{{ host", "without a matching"),
        ] {
            let err = check_outbound_host(bad, declared).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
