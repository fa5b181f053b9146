//! Errors in the manifest's shape: syntax, version, unknown fields and
//! types, trigger types, component references and ids, routes.

use super::*;

#[test]
fn toml_syntax_error() {
    let text = "spin_manifest_version = 2\n[application]\nname = \"t\nversion = \"1\"\n";
    let err = parse_err(text);
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.to_string().starts_with("/app/spin.toml:3:"), "{err}");
}

#[test]
fn missing_manifest_version() {
    assert_error(
        "[application]\nname = \"t\"\n",
        "[application]",
        &["missing `spin_manifest_version`", "version 2"],
    );
}

#[test]
fn unsupported_manifest_versions() {
    for version in ["1", "\"1\"", "3"] {
        let text = format!("spin_manifest_version = {version}\n[application]\nname = \"t\"\n");
        let expected = format!(
            "unsupported spin_manifest_version {}; trellis reads version 2",
            version.trim_matches('"')
        );
        assert_error(&text, "spin_manifest_version", &[&expected]);
    }
    // Spin's oldest manifests: v1 fields must not drown the version message.
    let v1 = "spin_version = \"1\"\nname = \"old\"\ntrigger = { type = \"http\", base = \"/\" }\n[[component]]\nid = \"x\"\n";
    assert_error(
        v1,
        "spin_version",
        &["unsupported spin_manifest_version 1; trellis reads version 2"],
    );
    assert_error(
        "spin_manifest_version = true\n",
        "spin_manifest_version",
        &["must be the integer 2, found boolean"],
    );
}

#[test]
fn unknown_fields_are_named_with_the_alternatives() {
    let cases = [
        (format!("{HEADER}colour = \"blue\"\n"), "colour"),
        (with_component("colour = \"blue\"", ""), "colour"),
        (
            with_component(
                "",
                "[variables]\nx = { default = \"1\", colour = \"blue\" }\n",
            ),
            "colour",
        ),
        (
            format!(
                "{HEADER}[[trigger.http]]\nroute = \"/\"\ncomponent = \"c\"\ncolour = \"blue\"\n[component.c]\nsource = \"c.wasm\"\n"
            ),
            "colour",
        ),
        (
            with_component("[component.c.tool.trellis]\ncolour = \"blue\"\n", ""),
            "colour",
        ),
        (
            with_component(
                "[component.c.build]\ncommand = \"make\"\ncolour = \"blue\"\n",
                "",
            ),
            "colour",
        ),
        (
            format!("{HEADER}[application.tool.trellis]\ncolour = \"blue\"\n"),
            "colour",
        ),
        (
            format!("{HEADER}[application.trigger.http]\ncolour = \"blue\"\n"),
            "colour",
        ),
        (format!("{HEADER}colour = 1\n"), "colour"),
    ];
    for (text, marker) in cases {
        assert_error(&text, marker, &["unknown field `colour`"]);
    }
    assert_error(
        &with_component("sauce = 1", ""),
        "sauce",
        &["unknown field `sauce`, expected one of", "`source`"],
    );
}

#[test]
fn wrong_types_keep_serdes_message() {
    assert_error(
        &format!("{HEADER}version = 5\n"),
        "version = 5",
        &["invalid type: integer `5`, expected a string"],
    );
    assert_error(
        &with_component("[component.c.tool.trellis]\ntimeout_ms = -1\n", ""),
        "timeout_ms",
        &["invalid value: integer `-1`, expected u64"],
    );
    assert_error(
        &format!("{HEADER}[[trigger.http]]\ncomponent = \"c\"\n"),
        "[[trigger.http]]",
        &["missing field `route`"],
    );
}

#[test]
fn unknown_trigger_types() {
    let text = with_component("", "[[trigger.foo]]\ncomponent = \"c\"\n");
    assert_error(
        &text,
        "trigger.foo",
        &["unknown trigger type `foo`; trellis supports: http, amqp"],
    );
    let text = format!("{HEADER}[application.trigger.redis]\naddress = \"redis://x\"\n");
    assert_error(
        &text,
        "application.trigger.redis",
        &["unknown trigger type `redis`", "http, amqp"],
    );
}

#[test]
fn triggers_must_name_defined_components() {
    let text = with_component(
        "",
        "[[trigger.http]]\nroute = \"/x\"\ncomponent = \"ghost\"\n",
    );
    assert_error(
        &text,
        "\"ghost\"",
        &[
            "component `ghost`, which is not defined",
            "defined components: c",
        ],
    );
    let text = with_component(
        "",
        "[[trigger.amqp]]\ncomponent = \"ghost\"\nqueue = \"q\"\n",
    );
    assert_error(
        &text,
        "\"ghost\"",
        &["component `ghost`, which is not defined"],
    );
    let text = format!("{HEADER}[[trigger.http]]\nroute = \"/\"\n");
    assert_error(&text, "[[trigger.http]]", &["no `component`"]);
}

#[test]
fn component_ids_must_be_kebab_or_snake_case() {
    for id in ["MyComp", "1st", "a--b", "trailing-", "\"a.b\""] {
        let text = format!("{HEADER}[component.{id}]\nsource = \"x.wasm\"\n");
        assert_error(
            &text,
            "[component.",
            &["component id", "is invalid", "starting with a letter"],
        );
    }
}

#[test]
fn route_errors() {
    let route = |r: &str| {
        with_component(
            "",
            &format!("[[trigger.http]]\nroute = {r}\ncomponent = \"c\"\n"),
        )
    };
    assert_error(
        &route("\"api\""),
        "route = \"api\"",
        &["route \"api\" must start with `/`"],
    );
    assert_error(
        &route("{ private = false }"),
        "private = false",
        &["`route = { private = false }` is not allowed"],
    );
    assert_error(
        &route("{ private = true, x = 1 }"),
        "private = true",
        &["may only hold `private = true`"],
    );
    assert_error(
        &route("42"),
        "route = 42",
        &["`route` must be a string or table, found integer"],
    );
    assert_error(
        &route("\"/users/:\""),
        "route = \"/users/:\"",
        &["malformed segment `:`"],
    );
    assert_error(
        &route("\"/users/:id.json\""),
        "route = \"/users/:id",
        &["malformed segment `:id.json`"],
    );
    assert_error(
        &route("\"/a/.../b\""),
        "route = \"/a/.../b\"",
        &["`...` before its last segment"],
    );
    let dup = format!(
        "{HEADER}[[trigger.http]]\nroute = \"/users/:id\"\ncomponent = \"a\"\n[[trigger.http]]\nroute = \"/users/:uid/\"\ncomponent = \"b\"\n\
         [component.a]\nsource = \"a.wasm\"\n[component.b]\nsource = \"b.wasm\"\n"
    );
    assert_error(
        &dup,
        "/users/:uid/",
        &["component `b`", "component `a`", "\"/users/:id\""],
    );
    let base = format!("{HEADER}[application.trigger.http]\nbase = \"shop\"\n");
    assert_error(&base, "base =", &["`base`", "must start with `/`"]);
}
