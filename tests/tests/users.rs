//! The user service as a client sees it, rule by rule from the Users section
//! and the general rules of `docs/api.md`: the real `trellis` binary on port 0
//! serving the `user` component over its own, fresh Postgres database.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use trellis_tests::{
    AppDir, Reply, TestDatabase, Trellis, UpOptions, assert_recent_utc, client, rfc3339_utc_seconds,
};

/// The body limit of the API (and the host's default).
const LIMIT: usize = 1 << 20;

/// The app under test: the user service alone, routed as in the shop.
const MANIFEST: &str = r#"
spin_manifest_version = 2

[application]
name = "users-e2e"

[[trigger.http]]
route = "/users"
component = "user"

[[trigger.http]]
route = "/users/..."
component = "user"

[component.user]
source = "{user}"

[component.user.variables]
db_url = "postgres://trellis.internal/users"

[component.user.tool.trellis.databases.users]
migrations = "migrations"
"#;

/// A running user service and a client for it.
struct Service {
    // Field order is drop order: the host stops before its database is dropped.
    trellis: Trellis,
    http: reqwest::Client,
    _app: AppDir,
    _db: TestDatabase,
}

impl Service {
    fn start() -> Self {
        // Paths a manifest names stay inside its directory: the user
        // service's migrations are copied beside it.
        let app = AppDir::new(MANIFEST);
        let from = concat!(env!("CARGO_MANIFEST_DIR"), "/../components/user/migrations");
        let to = app.path().join("migrations");
        std::fs::create_dir_all(&to).expect("migrations dir");
        for entry in std::fs::read_dir(from).expect("components/user/migrations") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy migration");
        }
        let db = TestDatabase::new("users");
        let trellis = Trellis::up_with(
            &app.manifest(),
            UpOptions {
                args: vec!["--database-url", &db.url],
                ..UpOptions::default()
            },
        );
        Self {
            trellis,
            http: client(),
            _app: app,
            _db: db,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self.http.request(method, self.trellis.url(path));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Reply::read(request.body(body).send().await.expect("request")).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, Vec::new()).await
    }

    /// `POST /users` with `body` serialised as JSON.
    async fn post(&self, body: &Value) -> Reply {
        self.post_raw(body.to_string()).await
    }

    async fn post_raw(&self, body: impl Into<reqwest::Body>) -> Reply {
        self.send(Method::POST, "/users", Some("application/json"), body)
            .await
    }

    /// Creates a user and returns it.
    async fn create(&self, email: &str, name: &str) -> Value {
        let reply = self.post(&json!({"email": email, "name": name})).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body
    }

    /// The ids of `GET /users?...` and its `next`.
    async fn page(&self, query: &str) -> (Vec<i64>, Value) {
        let reply = self.get(&format!("/users{query}")).await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let ids = reply.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: no items: {}", reply.body))
            .iter()
            .map(|user| user["id"].as_i64().expect("integer id"))
            .collect();
        (ids, reply.body["next"].clone())
    }
}

fn id_of(user: &Value) -> i64 {
    user["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer id: {user}"))
}

/// Asserts the user shape (exactly these four fields, of these types).
fn assert_user(user: &Value, email: &str, name: &str) {
    let keys: BTreeSet<&str> = user
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {user}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["id", "email", "name", "created_at"]));
    assert!(id_of(user) >= 1, "{user}");
    assert_eq!(user["email"], email, "{user}");
    assert_eq!(user["name"], name, "{user}");
    let created_at = user["created_at"].as_str().expect("created_at is a string");
    assert_recent_utc(created_at);
}

#[test]
fn the_timestamp_parser_itself() {
    assert_eq!(rfc3339_utc_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        rfc3339_utc_seconds("2000-03-01T01:02:03.456789Z"),
        Some(951_872_523)
    );
    for bad in [
        "2000-03-01T01:02:03+00:00",
        "2000-03-01 01:02:03Z",
        "2000-03-01T01:02:03.Z",
        "2000-03-01T01:02Z",
        "2000-13-01T01:02:03Z",
    ] {
        assert_eq!(rfc3339_utc_seconds(bad), None, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_answers_201_with_location_and_the_trimmed_user() {
    let service = Service::start();

    let reply = service
        .post(&json!({"email": "  Ann.Lee@Example.com\n", "name": "\t Ann  Lee \r\n"}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_user(&reply.body, "Ann.Lee@Example.com", "Ann  Lee");
    let ann = reply.body;
    let location = format!("/users/{}", id_of(&ann));
    assert_eq!(reply.headers["location"], location.as_str());

    // What was created is what is stored, with or without a trailing slash.
    for path in [location.clone(), format!("{location}/")] {
        let reply = service.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.body, ann, "{path}");
    }

    // A trailing slash on the collection, unknown fields (even ones that look
    // like the server's own) ignored; ids grow.
    let reply = service
        .send(
            Method::POST,
            "/users/",
            Some("application/json"),
            json!({
                "email": "bo@example.com", "name": "Bo", "id": 999_999,
                "created_at": "1999-01-01T00:00:00Z", "role": {"admin": true}, "tags": [1, 2],
            })
            .to_string(),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_user(&reply.body, "bo@example.com", "Bo");
    let bo = id_of(&reply.body);
    assert!(bo > id_of(&ann) && bo != 999_999, "{}", reply.body);
    assert_eq!(reply.headers["location"], format!("/users/{bo}").as_str());

    // A name that is a number in a string is a name: only the JSON type counts.
    let reply = service.post(&json!({"email": "5@5", "name": "5"})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_user(&reply.body, "5@5", "5");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_is_json_whatever_its_content_type() {
    let service = Service::start();
    let cases = [
        (Some("text/plain"), "a@text"),
        (Some("application/x-www-form-urlencoded"), "a@form"),
        (Some("application/octet-stream"), "a@octets"),
        (None, "a@none"),
    ];
    for (content_type, email) in cases {
        let body = json!({"email": email, "name": "A"}).to_string();
        let reply = service
            .send(Method::POST, "/users", content_type, body)
            .await;
        assert_eq!(reply.status, 201, "{content_type:?}: {}", reply.body);
        assert_user(&reply.body, email, "A");
    }
    // And JSON syntax is judged the same way, whatever the type claims.
    let reply = service
        .send(
            Method::POST,
            "/users",
            Some("application/json"),
            "email=a@b&name=A",
        )
        .await;
    reply.assert_error(400, "bad_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_of_a_missing_user_is_404() {
    let service = Service::start();
    let id = id_of(&service.create("x@y", "X").await);
    for path in [
        format!("/users/{}", id + 1),
        "/users/12345".to_owned(),
        // The largest id there can be is still well-formed.
        "/users/9223372036854775807".to_owned(),
        "/users/9223372036854775807/".to_owned(),
    ] {
        service.get(&path).await.assert_error(404, "not_found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_path_ids_are_400() {
    let service = Service::start();
    service.create("x@y", "X").await;
    for id in [
        "0",
        "01",
        "007",
        "-1",
        "+1",
        "abc",
        "1a",
        "1.0",
        "1e3",
        "0x1",
        "%31",
        "%201",
        "9223372036854775808",
        "99999999999999999999999",
    ] {
        let reply = service.get(&format!("/users/{id}")).await;
        assert_eq!(reply.status, 400, "/users/{id}: {}", reply.body);
        reply.assert_error(400, "bad_request");
        service
            .get(&format!("/users/{id}/"))
            .await
            .assert_error(400, "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_are_keyset_pages_ordered_by_id() {
    let service = Service::start();

    // An empty service has an empty last page.
    assert_eq!(service.page("").await, (vec![], Value::Null));

    let mut ids = Vec::new();
    for n in 0..51 {
        let user = service
            .create(&format!("user{n}@example.com"), &format!("User {n}"))
            .await;
        ids.push(id_of(&user));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Default limit 50: `next` is the last id of the page, the after of the next.
    let (page, next) = service.page("").await;
    assert_eq!(page, ids[..50], "default page");
    assert_eq!(next, ids[49]);
    let (page, next) = service.page(&format!("?after={}", ids[49])).await;
    assert_eq!(page, ids[50..]);
    assert_eq!(next, Value::Null, "nothing follows the last user");

    // Walk in pages of 10: 10, 10, 10, 10, 10, 1.
    let mut seen: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let (page, next) = service.page(&format!("?limit=10&after={after}")).await;
        assert!(page.len() <= 10);
        seen.extend(&page);
        match next {
            Value::Null => break,
            next => {
                assert_eq!(page.len(), 10);
                assert_eq!(next, *page.last().expect("a full page"));
                after = next.as_i64().expect("integer next");
            }
        }
    }
    assert_eq!(seen, ids);

    // `next` is null exactly when no user follows the page: a page that ends
    // on the last user has no next, even when it is full.
    let (page, next) = service.page(&format!("?limit=1&after={}", ids[49])).await;
    assert_eq!((page, next), (vec![ids[50]], Value::Null));
    let (page, next) = service.page(&format!("?limit=2&after={}", ids[48])).await;
    assert_eq!((page, next), (ids[49..].to_vec(), Value::Null));
    let (page, next) = service.page(&format!("?limit=1&after={}", ids[48])).await;
    assert_eq!((page, next), (vec![ids[49]], json!(ids[49])));
    assert_eq!(service.page("?limit=100").await, (ids.clone(), Value::Null));
    assert_eq!(service.page("?limit=51").await, (ids.clone(), Value::Null));
    let (page, next) = service.page("?limit=50&after=0").await;
    assert_eq!((page, next), (ids[..50].to_vec(), json!(ids[49])));

    // `after` need not be an existing id: ids greater than it.
    let (page, _) = service
        .page(&format!("?limit=3&after={}", ids[10] - 1))
        .await;
    assert_eq!(page, ids[10..13]);
    let last = ids[50];
    assert_eq!(
        service.page(&format!("?after={last}")).await,
        (vec![], Value::Null)
    );
    assert_eq!(
        service.page("?after=9223372036854775807&limit=1").await,
        (vec![], Value::Null)
    );

    // Unknown parameters are ignored; a trailing slash too.
    let (page, next) = service.page("?limit=2&sort=desc&foo").await;
    assert_eq!((page, next), (ids[..2].to_vec(), json!(ids[1])));
    let reply = service.get("/users/?limit=2").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["next"], ids[1]);

    // Items are whole users, the same as GET /users/{id} shows.
    let reply = service.get("/users?limit=1").await;
    let keys: BTreeSet<&str> = reply
        .body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["items", "next"]));
    let first = &reply.body["items"][0];
    assert_user(first, "user0@example.com", "User 0");
    assert_eq!(
        service.get(&format!("/users/{}", ids[0])).await.body,
        *first
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_or_out_of_range_list_parameters_are_400() {
    let service = Service::start();
    service.create("x@y", "X").await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=01",
        "limit=+5",
        "limit=5.0",
        "limit=1e1",
        "limit=abc",
        "limit=",
        "limit",
        "limit=%205",
        "limit=9223372036854775808",
        "limit=99999999999999999999",
        "after=-1",
        "after=abc",
        "after=1.5",
        "after=",
        "after",
        "after=01",
        "after=+1",
        "after=9223372036854775808",
        "limit=10&after=x",
        "limit=0&after=0",
    ] {
        let reply = service.get(&format!("/users?{query}")).await;
        assert_eq!(reply.status, 400, "?{query}: {}", reply.body);
        reply.assert_error(400, "bad_request");
    }
    // The edges that are in range.
    for query in [
        "limit=1",
        "limit=100",
        "after=0",
        "after=9223372036854775807",
    ] {
        let reply = service.get(&format!("/users?{query}")).await;
        assert_eq!(reply.status, 200, "?{query}: {}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_email_is_409_without_regard_to_case() {
    let service = Service::start();
    let bob = service.create("Bob.Smith@Example.com", "Bob").await;

    for email in [
        "Bob.Smith@Example.com",
        "bob.smith@example.com",
        "BOB.SMITH@EXAMPLE.COM",
        "  bob.smith@EXAMPLE.com  ",
    ] {
        let reply = service
            .post(&json!({"email": email, "name": "Another Bob"}))
            .await;
        reply.assert_error(409, "conflict");
    }
    // Nothing was created by the conflicts; other addresses are fine.
    let other = service.create("bob.smith@example.org", "Bob").await;
    let (ids, next) = service.page("").await;
    assert_eq!(ids, vec![id_of(&bob), id_of(&other)]);
    assert_eq!(next, Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400() {
    let service = Service::start();
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   ".to_vec(),
        b"{".to_vec(),
        b"{\"email\": }".to_vec(),
        b"{'email': 'a@b', 'name': 'A'}".to_vec(),
        b"{\"email\": \"a@b\", \"name\": \"A\",}".to_vec(),
        b"{\"email\": \"a@b\", \"name\": \"A\"} {}".to_vec(),
        b"{\"email\": \"a@b\", \"name\": \"A\"} x".to_vec(),
        b"email=a@b&name=A".to_vec(),
        b"nope".to_vec(),
        b"{\"email\": \"a@b\", \"name\": \"A\x01\"}".to_vec(),
        // Not UTF-8.
        b"{\"email\": \"a@b\", \"name\": \"\xff\xfe\"}".to_vec(),
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let reply = service.post_raw(body).await;
        assert_eq!(reply.status, 400, "{shown:?}: {}", reply.body);
        reply.assert_error(400, "bad_request");
    }
    assert_eq!(service.page("").await, (vec![], Value::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_an_object_or_lacks_a_field_is_422() {
    let service = Service::start();
    for body in [
        json!([]),
        json!([{"email": "a@b", "name": "A"}]),
        json!("a@b"),
        json!(5),
        json!(null),
        json!(true),
    ] {
        service.post(&body).await.assert_invalid("body");
    }
    service
        .post(&json!({"name": "A"}))
        .await
        .assert_invalid("email");
    service
        .post(&json!({"email": "a@b"}))
        .await
        .assert_invalid("name");
    service
        .post(&json!({"Email": "a@b", "name": "A"}))
        .await
        .assert_invalid("email");
    // Both missing: the message names one of them.
    let reply = service.post(&json!({})).await;
    let message = reply.assert_error(422, "invalid");
    assert!(
        message.contains("email") || message.contains("name"),
        "{message}"
    );
    assert_eq!(service.page("").await, (vec![], Value::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_of_the_wrong_type_are_422() {
    let service = Service::start();
    for email in [
        json!(5),
        json!(5.0),
        json!(null),
        json!(true),
        json!(["a@b"]),
        json!({"address": "a@b"}),
    ] {
        service
            .post(&json!({"email": email, "name": "A"}))
            .await
            .assert_invalid("email");
    }
    for name in [
        json!(5),
        json!(5.0),
        json!(null),
        json!(false),
        json!(["A"]),
        json!({"first": "A"}),
    ] {
        service
            .post(&json!({"email": "a@b", "name": name}))
            .await
            .assert_invalid("name");
    }
    assert_eq!(service.page("").await, (vec![], Value::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn lengths_count_unicode_scalar_values_after_trimming() {
    let service = Service::start();

    // name: 1..200. "é" is 2 bytes, "😀" 4 bytes and 2 UTF-16 units, "e\u{301}"
    // is one grapheme but two scalar values: all counted as scalar values.
    let accepted = [
        ("n1@x", "A".to_owned()),
        ("n2@x", "é".repeat(200)),
        ("n3@x", "😀".repeat(200)),
        ("n4@x", "e\u{301}".repeat(100)),
        ("n5@x", format!("  {}\t\n", "é".repeat(200))),
    ];
    for (email, name) in &accepted {
        let reply = service.post(&json!({"email": email, "name": name})).await;
        assert_eq!(reply.status, 201, "{name:?}: {}", reply.body);
        assert_user(&reply.body, email, name.trim());
    }
    for name in [
        String::new(),
        "   ".to_owned(),
        "\t\n".to_owned(),
        "é".repeat(201),
        "😀".repeat(201),
        "e\u{301}".repeat(100) + "e",
        "x".repeat(201),
    ] {
        service
            .post(&json!({"email": "long@x", "name": name}))
            .await
            .assert_invalid("name");
    }

    // email: 3..254.
    let local = |n: usize| "é".repeat(n);
    let accepted = [
        "a@b".to_owned(),
        format!("{}@x", local(252)),
        format!("{}@example.com", "a".repeat(242)),
        format!(" \t{}@x\n ", "è".repeat(252)),
    ];
    for email in &accepted {
        let reply = service.post(&json!({"email": email, "name": "E"})).await;
        assert_eq!(reply.status, 201, "{email:?}: {}", reply.body);
        assert_user(&reply.body, email.trim(), "E");
    }
    for email in [
        format!("{}@x", local(253)),
        format!("{}@example.com", "a".repeat(243)),
        "a@".to_owned(),
        "@".to_owned(),
        String::new(),
        "   ".to_owned(),
    ] {
        service
            .post(&json!({"email": email, "name": "E"}))
            .await
            .assert_invalid("email");
    }
    let (ids, _) = service.page("").await;
    assert_eq!(ids.len(), 9, "only the accepted users exist");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_needs_exactly_one_at_with_text_around_and_no_whitespace() {
    let service = Service::start();
    for email in [
        "plainaddress",
        "a.example.com",
        "@example.com",
        "ann@",
        "ann@@example.com",
        "ann@b@example.com",
        "@@@",
        "ann lee@example.com",
        "ann@exa mple.com",
        "ann\t@example.com",
        "ann@example\n.com",
        "ann@example.com\r\nbcc@x",
    ] {
        service
            .post(&json!({"email": email, "name": "Ann"}))
            .await
            .assert_invalid("email");
    }
    // The shape is all the API asks for.
    for email in [
        "a@b",
        "ann+tag@localhost",
        "\"quoted\"@x",
        "ünï@cödé.example",
    ] {
        let reply = service.post(&json!({"email": email, "name": "Ann"})).await;
        assert_eq!(reply.status, 201, "{email:?}: {}", reply.body);
        assert_user(&reply.body, email, "Ann");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn text_with_u0000_is_422() {
    let service = Service::start();
    for email in [
        "ann\u{0}@example.com",
        "ann@example.com\u{0}",
        "\u{0}ann@example.com",
    ] {
        service
            .post(&json!({"email": email, "name": "Ann"}))
            .await
            .assert_invalid("email");
    }
    for name in ["Ann\u{0}", "\u{0}", "A\u{0}nn"] {
        service
            .post(&json!({"email": "ann@example.com", "name": name}))
            .await
            .assert_invalid("name");
    }
    // Spelled as the JSON escape, to be sure of what is on the wire.
    let reply = service
        .post_raw(r#"{"email": "ann@example.com", "name": "A\u0000"}"#)
        .await;
    reply.assert_invalid("name");
    assert_eq!(service.page("").await, (vec![], Value::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn other_methods_are_405_with_allow() {
    let service = Service::start();
    let id = id_of(&service.create("x@y", "X").await);

    let allow = |reply: &Reply| -> BTreeSet<String> {
        reply
            .header("allow")
            .unwrap_or_else(|| panic!("no Allow header: {}", reply.body))
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect()
    };
    let set = |methods: &[&str]| {
        methods
            .iter()
            .map(|m| m.to_string())
            .collect::<BTreeSet<_>>()
    };

    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        for path in ["/users", "/users/"] {
            let reply = service
                .send(method.clone(), path, Some("application/json"), "{}")
                .await;
            reply.assert_error(405, "method_not_allowed");
            assert_eq!(allow(&reply), set(&["GET", "POST"]), "{method} {path}");
        }
    }
    // The method is checked before the id, and before the body is read.
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        for path in [
            format!("/users/{id}"),
            format!("/users/{id}/"),
            "/users/abc".to_owned(),
            "/users/0".to_owned(),
        ] {
            let reply = service
                .send(method.clone(), &path, Some("application/json"), "not json")
                .await;
            reply.assert_error(405, "method_not_allowed");
            assert_eq!(allow(&reply), set(&["GET"]), "{method} {path}");
        }
    }
    // Nothing was changed by them.
    assert_user(&service.get(&format!("/users/{id}")).await.body, "x@y", "X");
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_that_name_nothing_are_404() {
    let service = Service::start();
    let id = id_of(&service.create("x@y", "X").await);
    for path in [
        format!("/users/{id}/profile"),
        format!("/users/{id}/x/y"),
        format!("/users/{id}//"),
        "/users//".to_owned(),
        "/users/abc/def".to_owned(),
        "/usersx".to_owned(),
        "/user".to_owned(),
        "/".to_owned(),
    ] {
        service.get(&path).await.assert_error(404, "not_found");
        // The route comes before the method.
        service
            .send(Method::DELETE, &path, None, Vec::new())
            .await
            .assert_error(404, "not_found");
    }
}

/// `{"email", "name", "pad"}` of exactly `len` bytes: valid, with the size
/// made up by an unknown field.
fn padded_user(email: &str, len: usize) -> Vec<u8> {
    let empty = json!({"email": email, "name": "Big", "pad": ""}).to_string();
    let padded = json!({"email": email, "name": "Big", "pad": "p".repeat(len - empty.len())});
    let bytes = padded.to_string().into_bytes();
    assert_eq!(bytes.len(), len);
    bytes
}

/// The same bytes sent chunked (no content-length).
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_1_mib_are_413_and_exactly_1_mib_is_read() {
    let service = Service::start();

    // Exactly the limit is read and judged on its content.
    let reply = service.post_raw(padded_user("big@x", LIMIT)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_user(&reply.body, "big@x", "Big");
    let reply = service
        .post_raw(chunked(padded_user("big2@x", LIMIT)))
        .await;
    assert_eq!(reply.status, 201, "chunked: {}", reply.body);
    service
        .post_raw(vec![b'a'; LIMIT])
        .await
        .assert_error(400, "bad_request");
    let not_an_object = json!("s".repeat(LIMIT - 2)).to_string();
    assert_eq!(not_an_object.len(), LIMIT);
    service.post_raw(not_an_object).await.assert_invalid("body");

    // One byte more is too large, whatever the content, chunked or not.
    service
        .post_raw(padded_user("big3@x", LIMIT + 1))
        .await
        .assert_error(413, "payload_too_large");
    service
        .post_raw(chunked(padded_user("big4@x", LIMIT + 1)))
        .await
        .assert_error(413, "payload_too_large");

    let (ids, _) = service.page("").await;
    assert_eq!(
        ids.len(),
        2,
        "only the two bodies within the limit made users"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_run_in_order_route_method_size_syntax_fields() {
    let service = Service::start();
    let id = id_of(&service.create("x@y", "X").await);
    let huge = || vec![b'{'; 2 * LIMIT];

    // Route before everything.
    service
        .send(Method::POST, &format!("/users/{id}/x"), None, huge())
        .await
        .assert_error(404, "not_found");
    // Method before size.
    let reply = service.send(Method::DELETE, "/users", None, huge()).await;
    reply.assert_error(405, "method_not_allowed");
    assert!(reply.header("allow").is_some());
    service
        .send(Method::PUT, &format!("/users/{id}"), None, chunked(huge()))
        .await
        .assert_error(405, "method_not_allowed");
    // Size before JSON syntax and before fields, chunked or not.
    service
        .post_raw(huge())
        .await
        .assert_error(413, "payload_too_large");
    service
        .post_raw(chunked(huge()))
        .await
        .assert_error(413, "payload_too_large");
    let invalid_but_huge =
        json!({"email": "no-at-sign", "name": "x".repeat(2 * LIMIT)}).to_string();
    service
        .post_raw(invalid_but_huge)
        .await
        .assert_error(413, "payload_too_large");
    // JSON syntax before fields: a body that is both malformed and missing
    // everything is a 400.
    service
        .post_raw(r#"{"name": 5"#)
        .await
        .assert_error(400, "bad_request");
    // A valid body that breaks two rules is one 422.
    service
        .post(&json!({"email": 5, "name": 5}))
        .await
        .assert_error(422, "invalid");
    // Fields before the database: an invalid duplicate is 422, not 409.
    service
        .post(&json!({"email": "X@Y", "name": ""}))
        .await
        .assert_invalid("name");
}
