//! Errors in the values of individual fields: variables, sources, hosts,
//! limits, unsupported Spin features, files, build and AMQP settings.

use super::*;

#[test]
fn variable_errors() {
    let vars = |v: &str| format!("{HEADER}[variables]\n{v}\n");
    assert_error(
        &vars("API_KEY = { default = \"x\" }"),
        "API_KEY",
        &["variable name `API_KEY` is invalid", "lowercase"],
    );
    assert_error(
        &vars("api_key = { default = \"x\", required = true }"),
        "api_key",
        &["variable `api_key` has both `default` and `required = true`"],
    );
    let component_var = |v: &str| {
        with_component(
            &format!("variables = {{ {v} }}"),
            "[variables]\nhost = { default = \"h\" }\n",
        )
    };
    assert_error(
        &component_var("url = \"https://{{ hots }}/\""),
        "variables = {",
        &["component variable `url` refers to undeclared application variable `hots`"],
    );
    assert_error(
        &component_var("Url = \"x\""),
        "variables = {",
        &["component variable name `Url` is invalid"],
    );
    assert_error(
        &component_var("url = \"{{ host\""),
        "variables = {",
        &["component variable `url`", "without a matching `}}`"],
    );
    assert_error(
        &component_var("url = \"host }}\""),
        "variables = {",
        &["`}}` without a matching `{{`"],
    );
}

#[test]
fn source_errors() {
    let text = format!("{HEADER}[component.c]\ndescription = \"no source\"\n");
    assert_error(&text, "[component.c]", &["missing field `source`"]);
    let source = |s: &str| format!("{HEADER}[component.c]\nsource = {s}\n");
    assert_error(
        &source("7"),
        "source = 7",
        &["`source` must be a path string", "found integer"],
    );
    assert_error(&source("\"\""), "source = \"\"", &["`source` is empty"]);
    for remote in [
        "{ url = \"https://example.com/a.wasm\", digest = \"sha256:00\" }",
        "{ registry = \"ttl.sh\", package = \"a:b\", version = \"1.0.0\" }",
    ] {
        assert_error(
            &source(remote),
            "source = {",
            &["only local file sources are supported"],
        );
    }
}

#[test]
fn outbound_host_errors_quote_the_entry() {
    for (entry, why) in [
        ("example.com", "no scheme"),
        ("https://", "empty host"),
        ("https://example.com/api", "path"),
        ("https://x:99999", "port"),
        (
            "https://{{ nope }}",
            "undeclared application variable `nope`",
        ),
    ] {
        let text = with_component(
            &format!(
                "allowed_outbound_hosts = [\n  \"https://ok.example.com\",\n  \"{entry}\",\n]"
            ),
            "",
        );
        let marker = format!("  \"{entry}\"");
        assert_error(
            &text,
            &marker,
            &[&format!("allowed_outbound_hosts entry \"{entry}\""), why],
        );
    }
}

#[test]
fn trellis_limits_out_of_range_name_the_field() {
    for (setting, needle) in [
        (
            "memory_limit_mib = 0",
            "`memory_limit_mib` must be between 1 and 4096 (MiB), found 0",
        ),
        (
            "memory_limit_mib = 5000",
            "`memory_limit_mib` must be between 1 and 4096",
        ),
        (
            "timeout_ms = 0",
            "`timeout_ms` must be between 1 and 86400000 (milliseconds), found 0",
        ),
        (
            "timeout_ms = 9223372036854775807",
            "`timeout_ms` must be between 1 and 86400000",
        ),
        (
            "max_request_body_bytes = 0",
            "`max_request_body_bytes` must be between 1 and 1073741824",
        ),
        (
            "max_request_body_bytes = 9223372036854775807",
            "`max_request_body_bytes` must be between 1 and 1073741824",
        ),
        (
            "max_concurrency = 0",
            "`max_concurrency` must be between 1 and 100000",
        ),
        (
            "max_concurrency = 9223372036854775807",
            "`max_concurrency` must be between 1 and 100000",
        ),
    ] {
        let text = with_component(&format!("[component.c.tool.trellis]\n{setting}\n"), "");
        assert_error(&text, setting, &[needle]);
    }
}

#[test]
fn unsupported_spin_features_are_rejected_by_name_when_used() {
    for (field, value) in [
        ("key_value_stores", "[\"default\"]"),
        ("sqlite_databases", "[\"default\"]"),
        ("ai_models", "[\"llama2-chat\"]"),
        ("dependencies", "{ \"a:b/c\" = \"1.0\" }"),
        ("allowed_http_hosts", "[\"example.com\"]"),
        ("dependencies_inherit_configuration", "true"),
    ] {
        let text = with_component(&format!("{field} = {value}"), "");
        assert_error(
            &text,
            &format!("{field} ="),
            &[&format!("`{field}"), "not supported by trellis"],
        );
    }
    let trigger =
        |extra: &str| with_component("", &format!("[[trigger.http]]\nroute = \"/x\"\n{extra}\n"));
    assert_error(
        &trigger("component = \"c\"\nexecutor = { type = \"wagi\" }"),
        "executor",
        &["executor type `wagi` is not supported"],
    );
    assert_error(
        &trigger("component = { source = \"inline.wasm\" }"),
        "component = {",
        &["inline component tables", "not supported"],
    );
    assert_error(
        &trigger("component = \"c\"\nstatic_response = { status_code = 404 }"),
        "static_response",
        &["`static_response`", "not supported"],
    );
}

#[test]
fn files_and_build_errors() {
    let files = |f: &str| with_component(&format!("files = [{f}]"), "");
    assert_error(
        &files("\"/etc/passwd\""),
        "files =",
        &["`files` entry \"/etc/passwd\"", "relative"],
    );
    assert_error(
        &files("\"../secrets/*\""),
        "files =",
        &["`files` entry \"../secrets/*\""],
    );
    assert_error(
        &files("{ source = \"assets\" }"),
        "files =",
        &["missing field `destination`"],
    );
    assert_error(
        &files("{ source = \"a\", destination = \"rel\" }"),
        "files =",
        &["destination \"rel\" must be an absolute"],
    );
    assert_error(&files("3"), "files =", &["found integer"]);
    assert_error(
        &files("{ source = \"/\", destination = \"/h\" }"),
        "files =",
        &["`files` entry source \"/\"", "relative"],
    );
    assert_error(
        &files("{ source = \"assets/../..\", destination = \"/h\" }"),
        "files =",
        &["`files` entry source \"assets/../..\"", "no `..`"],
    );
    assert_error(
        &with_component("exclude_files = [\"/etc/*\"]", ""),
        "exclude_files",
        &["`exclude_files` entry \"/etc/*\"", "relative"],
    );
    assert_error(
        &with_component(
            "",
            "[component.c.tool.trellis.databases.data]\nmigrations = \"../../etc\"",
        ),
        "migrations =",
        &["`migrations` \"../../etc\"", "no `..`"],
    );
    let build = |b: &str| with_component(&format!("[component.c.build]\n{b}\n"), "");
    assert_error(
        &build("command = [\"a\", \"b\"]"),
        "command",
        &["`command` lists 2 commands"],
    );
    assert_error(
        &build("command = \" \""),
        "command",
        &["`command` is empty"],
    );
}

#[test]
fn amqp_errors() {
    let amqp = |t: &str| with_component("", &format!("[[trigger.amqp]]\ncomponent = \"c\"\n{t}\n"));
    assert_error(&amqp("queue = \"\""), "queue", &["`queue` is empty"]);
    assert_error(
        &amqp("queue = \"q\"\nprefetch = 0"),
        "prefetch",
        &["`prefetch` must be at least 1, found 0"],
    );
    assert_error(
        &amqp("queue = \"q\"\nmax_attempts = 0"),
        "max_attempts",
        &["`max_attempts` must be at least 1"],
    );
    assert_error(
        &amqp("queue = \"q\"\nbinding_keys = [\"k\"]"),
        "binding_keys",
        &["`binding_keys` needs an exchange"],
    );
    assert_error(
        &amqp("id = 7\nqueue = \"q\""),
        "id = 7",
        &["invalid type: integer `7`, expected a string"],
    );
    let broker =
        format!("{HEADER}[application.trigger.amqp]\nbroker = \"amqp://{{{{ user }}}}@h\"\n");
    assert_error(
        &broker,
        "broker",
        &["`broker` refers to undeclared application variable `user`"],
    );
    let ids = with_component(
        "",
        "[[trigger.http]]\nid = \"t\"\nroute = \"/a\"\ncomponent = \"c\"\n[[trigger.amqp]]\nid = \"t\"\ncomponent = \"c\"\nqueue = \"q\"\n",
    );
    let err = parse_err(&ids);
    assert!(
        err.to_string()
            .contains("trigger id `t` is already used on line"),
        "{err}"
    );
}

#[test]
fn messaging_settings() {
    let messaging = |m: &str| {
        with_component(
            &format!(
                "[component.c.tool.trellis.messaging]\n{m}\n[component.c.tool.trellis.databases.d]\noutbox = true\n"
            ),
            "",
        )
    };
    let manifest = parse_ok(&messaging("publish = [\"order.*\", \"audit.#\"]"));
    let trellis = &manifest.components["c"].trellis;
    assert_eq!(trellis.publish, vec!["order.*", "audit.#"]);
    assert!(trellis.databases["d"].outbox);

    assert_error(
        &messaging("publish = [\"order.cre*\"]"),
        "publish",
        &["`publish` pattern \"order.cre*\"", "must stand alone"],
    );
    assert_error(
        &messaging("publish = [\"order..created\"]"),
        "publish",
        &["empty word"],
    );
    let hashes = ["#"; 9].join(".");
    assert_error(
        &messaging(&format!("publish = [\"{hashes}.z\"]")),
        "publish",
        &["more than 8 wildcards"],
    );
    let words = ["w"; 17].join(".");
    assert_error(
        &messaging(&format!("publish = [\"{words}\"]")),
        "publish",
        &["more than 16 words"],
    );
    assert_error(
        &messaging("subscribe = [\"order.*\"]"),
        "subscribe",
        &["subscribe"],
    );
}
