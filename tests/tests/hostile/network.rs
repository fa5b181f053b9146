//! Attacks over outbound HTTP: the host's own admin API and the cloud's
//! metadata service, reached under spellings the allow-list does not know
//! lead there.

use trellis_tests::platform::Env;

#[tokio::test(flavor = "multi_thread")]
async fn outbound_http_cannot_reach_the_host_or_its_link() {
    let env = Env::new("hostile_http_egress");
    let host = env.host();
    let admin_port = host.trellis.admin.expect("admin address").port();
    let public_port = host.trellis.addr.port();
    let own = super::own_hostname();
    let app = super::testbed_app(&format!(
        r#"allowed_outbound_hosts = [
    "http://0.0.0.0:*", "http://127.1:*", "http://2130706433:*",
    "http://[::ffff:127.0.0.1]:*", "http://169.254.169.254", "http://{own}:*",
]"#
    ));
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &app);
    let targets = [
        format!("http://0.0.0.0:{admin_port}/v1/tenants"),
        format!("http://127.1:{admin_port}/v1/tenants"),
        format!("http://2130706433:{admin_port}/v1/status"),
        format!("http://[::ffff:127.0.0.1]:{admin_port}/metrics"),
        format!("http://{own}:{admin_port}/v1/tenants"),
        // Back in through the public listener, as another tenant's client.
        format!("http://0.0.0.0:{public_port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ];
    for target in &targets {
        let answer = host
            .get(
                "probe.evil.localhost",
                &format!("/outbound?url={}", encode(target)),
            )
            .await;
        assert_eq!(answer.status, 502, "{target}: reached: {}", answer.text);
        assert!(
            answer.text.to_ascii_lowercase().contains("denied"),
            "{target}: {}",
            answer.text
        );
    }
    assert!(
        host.trellis
            .wait_for_log(|line| line.contains("outbound request denied")),
        "{}",
        host.trellis.logs()
    );
}

/// Query-string encoding of a URL.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A guest opening a raw TCP socket (`wasi:sockets`) to the platform's
/// Postgres, its broker or the admin API, past every capability the host
/// checks: WASI sockets are denied for every address.
#[tokio::test(flavor = "multi_thread")]
async fn raw_sockets_reach_nothing() {
    let env = Env::new("hostile_sockets");
    let host = env.host();
    let admin = host.trellis.admin.expect("admin address");
    let app = super::testbed_app("");
    host.cli(&["tenant", "create", "evil"]);
    host.deploy("evil", &app);
    for target in [
        "127.0.0.1:5432".to_owned(),
        "127.0.0.1:5672".to_owned(),
        admin.to_string(),
    ] {
        let (status, text) = super::get_text(
            &host,
            "probe.evil.localhost",
            &format!("/tcp?addr={target}"),
        )
        .await;
        assert_eq!(status, 403, "{target}: {text}");
    }
}
