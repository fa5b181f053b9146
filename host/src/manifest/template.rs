//! `{{ name }}` templates, as used by component variables, the AMQP broker
//! default and `allowed_outbound_hosts` entries.
//!
//! The syntax is deliberately small (Spin's): `{{` opens a reference, `}}` closes
//! it, whitespace inside the braces is ignored, and the name must be a valid
//! application variable name. Single braces are literal text, so JSON-ish values
//! such as `{"a": 1}` need no escaping.

use super::checks::{VARIABLE_NAME_RULE, is_variable_name};

/// One piece of a parsed template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Text copied as is.
    Literal(&'a str),
    /// A `{{ name }}` reference (the name, trimmed).
    Variable(&'a str),
}

/// Splits a template into literal text and variable references, or explains
/// what is malformed (unbalanced braces, empty or invalid names).
pub(crate) fn parse(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    loop {
        let open = rest.find("{{");
        // A `}}` before the next `{{` (or with no `{{` at all) closes nothing.
        let close_before_open = match (rest.find("}}"), open) {
            (Some(close), Some(open)) => close < open,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if close_before_open {
            return Err(format!(
                "template {template:?} has `}}}}` without a matching `{{{{`"
            ));
        }
        let Some(open) = open else {
            if !rest.is_empty() {
                pieces.push(Piece::Literal(rest));
            }
            return Ok(pieces);
        };
        if open > 0 {
            pieces.push(Piece::Literal(&rest[..open]));
        }
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            return Err(format!(
                "template {template:?} has `{{{{` without a matching `}}}}`"
            ));
        };
        let name = after_open[..close].trim();
        if name.contains("{{") {
            return Err(format!(
                "template {template:?} has `{{{{` without a matching `}}}}`"
            ));
        }
        if name.is_empty() {
            return Err(format!(
                "template {template:?} has an empty `{{{{ }}}}` reference"
            ));
        }
        if !is_variable_name(name) {
            return Err(format!(
                "template {template:?} refers to `{name}`, which is not a valid variable name ({VARIABLE_NAME_RULE})"
            ));
        }
        pieces.push(Piece::Variable(name));
        rest = &after_open[close + 2..];
    }
}

/// The variable names a template refers to, in order of appearance.
pub(crate) fn references(template: &str) -> Result<Vec<&str>, String> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Variable(name) => Some(name),
            Piece::Literal(_) => None,
        })
        .collect())
}

/// Substitutes every `{{ name }}` in `template` with `lookup(name)`.
///
/// Errors (as a message) when the template is malformed or `lookup` has no
/// value for a referenced name.
///
/// ```
/// # use trellis::manifest::expand_template;
/// let url = expand_template("https://{{ host }}/api", |name| {
///     (name == "host").then(|| "example.com".to_string())
/// });
/// assert_eq!(url.as_deref(), Ok("https://example.com/api"));
/// ```
pub fn expand_template(
    template: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Literal(text) => out.push_str(text),
            Piece::Variable(name) => match lookup(name) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("no value for variable `{name}`")),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "host" => Some("example.com".into()),
            "port" => Some("8080".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_references_with_or_without_spaces() {
        assert_eq!(
            expand_template("{{host}}", lookup).as_deref(),
            Ok("example.com")
        );
        assert_eq!(
            expand_template("http://{{ host }}:{{  port  }}/x", lookup).as_deref(),
            Ok("http://example.com:8080/x")
        );
        assert_eq!(expand_template("plain", lookup).as_deref(), Ok("plain"));
        assert_eq!(expand_template("", lookup).as_deref(), Ok(""));
        // Single braces are literal.
        assert_eq!(
            expand_template(r#"{"h": "{{ host }}"}"#, lookup).as_deref(),
            Ok(r#"{"h": "example.com"}"#)
        );
    }

    #[test]
    fn reports_missing_values_and_malformed_templates() {
        let missing = expand_template("{{ nope }}", lookup).unwrap_err();
        assert!(missing.contains("`nope`"), "{missing}");
        for (bad, expected) in [
            ("{{ host", "without a matching `}}`"),
            ("host }}", "`}}` without a matching `{{`"),
            ("}} {{ host }}", "`}}` without a matching `{{`"),
            ("{{ {{ host }}", "without a matching `}}`"),
            ("{{ }}", "empty"),
            ("{{ Host }}", "not a valid variable name"),
            ("{{ a-b }}", "not a valid variable name"),
        ] {
            let err = expand_template(bad, lookup).unwrap_err();
            assert!(err.contains(expected), "{bad:?}: {err}");
        }
    }

    #[test]
    fn lists_references_in_order() {
        assert_eq!(
            references("{{ b }}-{{ a }}-{{ b }}"),
            Ok(vec!["b", "a", "b"])
        );
        assert_eq!(references("none"), Ok(vec![]));
    }
}
