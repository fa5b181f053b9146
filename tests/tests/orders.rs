//! Orders and payments as a client sees them, rule by rule from the Orders,
//! Payments, Events and Health sections and the general rules of
//! `docs/api.md`: the real `trellis up` serving the whole shop (the root
//! `spin.toml`, see `shop_manifest`) over its own Postgres database and its
//! own RabbitMQ vhost. Nothing here looks inside the services: what the events
//! do is judged by what HTTP shows (an order turning `paid` or `cancelled`,
//! its one payment).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use trellis_tests::{Reply, Shop, TestBroker, TestDatabase, assert_recent_utc};

/// The body limit of the API (and the host's default).
const LIMIT: usize = 1 << 20;

/// api.md: "within 5 seconds of `201` ... (on an idle machine)". The CI
/// machine runs many test binaries' hosts at once, so the tests allow three
/// times that; a product that needs more than this is too slow, not flaky.
const SETTLE: Duration = Duration::from_secs(15);

/// How long a host may take to notice that the broker is back and catch up.
/// api.md gives no number for this; it is only a bound on the test.
const RECOVERY: Duration = Duration::from_secs(60);

/// The largest payment that succeeds.
const PAYMENT_LIMIT: i64 = 100_000;

/// A user id that no test creates (ids are serial, and a test makes a few).
const NO_USER: i64 = 987_654_321;

/// An order id that no test creates.
const NO_ORDER: i64 = 987_654_321;

// --- helpers ----------------------------------------------------------------

async fn send(
    shop: &Shop,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut request = shop.http().request(method, shop.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body).send().await.expect("request");
    Reply::read(response).await
}

/// `POST /orders` with `body` as it is, and an `Idempotency-Key` if given.
async fn post_order(shop: &Shop, body: impl Into<reqwest::Body>, key: Option<&str>) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    send(shop, Method::POST, "/orders", &headers, body).await
}

fn order_body(user_id: i64, product_name: &str, amount: i64) -> String {
    json!({"user_id": user_id, "product_name": product_name, "amount": amount}).to_string()
}

/// Creates a user; its id.
async fn create_user(shop: &Shop, email: &str) -> i64 {
    let reply = shop
        .post("/users", &json!({"email": email, "name": "Buyer"}))
        .await;
    assert_eq!(reply.status, 201, "POST /users: {}", reply.text);
    id_of(&reply.body)
}

/// Creates an order (201 checked); the order as the 201 showed it.
async fn create_order(shop: &Shop, user_id: i64, product_name: &str, amount: i64) -> Value {
    let reply = post_order(shop, order_body(user_id, product_name, amount), None).await;
    assert_eq!(reply.status, 201, "POST /orders: {}", reply.text);
    assert_order(&reply.body, user_id, product_name, amount);
    assert_eq!(reply.body["status"], "pending", "{}", reply.text);
    reply.body
}

fn id_of(value: &Value) -> i64 {
    value["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer id: {value}"))
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// Asserts the order shape (exactly these six fields, of these types) and
/// contents; any status of the three.
fn assert_order(order: &Value, user_id: i64, product_name: &str, amount: i64) {
    assert_eq!(
        keys(order),
        BTreeSet::from([
            "id",
            "user_id",
            "product_name",
            "amount",
            "status",
            "created_at"
        ]),
        "{order}"
    );
    assert!(id_of(order) >= 1, "{order}");
    assert_eq!(order["user_id"], user_id, "{order}");
    assert_eq!(order["product_name"], product_name, "{order}");
    assert_eq!(order["amount"], amount, "{order}");
    let status = order["status"].as_str().expect("status is a string");
    assert!(
        ["pending", "paid", "cancelled"].contains(&status),
        "{order}"
    );
    assert_recent_utc(
        order["created_at"]
            .as_str()
            .expect("created_at is a string"),
    );
}

/// `order` without its status (which moves on by itself).
fn without_status(order: &Value) -> Value {
    let mut order = order.clone();
    order
        .as_object_mut()
        .expect("an order is an object")
        .remove("status");
    order
}

/// The status an order of `amount` ends in.
fn final_status(amount: i64) -> &'static str {
    if amount <= PAYMENT_LIMIT {
        "paid"
    } else {
        "cancelled"
    }
}

async fn get_order(shop: &Shop, id: i64) -> Value {
    let reply = shop.get(&format!("/orders/{id}")).await;
    assert_eq!(reply.status, 200, "GET /orders/{id}: {}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.body
}

/// Polls `GET /orders/{id}` until it is no longer `pending`, at most `limit`;
/// the order then and how long it took.
async fn wait_final(shop: &Shop, id: i64, limit: Duration) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let order = get_order(shop, id).await;
        if order["status"] != "pending" {
            return (order, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "order {id} is still pending after {limit:?}: {order}\n--- host log ---\n{}",
            shop.trellis.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /payments?order_id=<id>`: its items.
async fn payments_of(shop: &Shop, order_id: i64) -> Vec<Value> {
    let reply = shop.get(&format!("/payments?order_id={order_id}")).await;
    assert_eq!(reply.status, 200, "payments of {order_id}: {}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        keys(&reply.body),
        BTreeSet::from(["items"]),
        "{}",
        reply.text
    );
    reply.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items is not an array: {}", reply.text))
        .clone()
}

/// Asserts the payment shape and contents for an order of `amount`.
fn assert_payment(payment: &Value, order_id: i64, amount: i64) {
    assert_eq!(
        keys(payment),
        BTreeSet::from(["id", "order_id", "amount", "status", "reason", "created_at"]),
        "{payment}"
    );
    assert!(id_of(payment) >= 1, "{payment}");
    assert_eq!(payment["order_id"], order_id, "{payment}");
    assert_eq!(payment["amount"], amount, "{payment}");
    if amount <= PAYMENT_LIMIT {
        assert_eq!(payment["status"], "succeeded", "{payment}");
        assert_eq!(payment["reason"], Value::Null, "{payment}");
    } else {
        assert_eq!(payment["status"], "failed", "{payment}");
        assert_eq!(payment["reason"], "limit_exceeded", "{payment}");
    }
    assert_recent_utc(
        payment["created_at"]
            .as_str()
            .expect("created_at is a string"),
    );
}

/// Waits until the order of `amount` is final, then checks the final status
/// and its one payment (also through `GET /payments/{id}`); the order.
async fn assert_settles(shop: &Shop, order: &Value, limit: Duration) -> Value {
    let id = id_of(order);
    let amount = order["amount"].as_i64().expect("integer amount");
    let (settled, _) = wait_final(shop, id, limit).await;
    assert_eq!(settled["status"], final_status(amount), "{settled}");
    assert_eq!(without_status(&settled), without_status(order));
    // The payment was made before the order could move: it shows already.
    let payments = payments_of(shop, id).await;
    assert_eq!(
        payments.len(),
        1,
        "exactly one payment for {id}: {payments:?}"
    );
    assert_payment(&payments[0], id, amount);
    let reply = shop
        .get(&format!("/payments/{}", id_of(&payments[0])))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body, payments[0]);
    settled
}

/// `GET /orders?user_id=<user>`: the ids of its items.
async fn order_ids_of(shop: &Shop, user: i64) -> Vec<i64> {
    let reply = shop.get(&format!("/orders?user_id={user}")).await;
    assert_eq!(reply.status, 200, "orders of {user}: {}", reply.text);
    assert_eq!(
        keys(&reply.body),
        BTreeSet::from(["items"]),
        "{}",
        reply.text
    );
    reply.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items is not an array: {}", reply.text))
        .iter()
        .map(id_of)
        .collect()
}

/// Polls `/health/ready` until it answers `status`, at most `limit`; the reply.
async fn wait_ready_status(shop: &Shop, status: u16, limit: Duration) -> Reply {
    let started = Instant::now();
    loop {
        let reply = shop.get("/health/ready").await;
        if reply.status == status {
            return reply;
        }
        assert!(
            started.elapsed() < limit,
            "/health/ready is not {status} after {limit:?}: {} {}\n--- host log ---\n{}",
            reply.status,
            reply.text,
            shop.trellis.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `{"user_id", "product_name", "amount", "pad"}` of exactly `len` bytes:
/// valid, with the size made up by an unknown field.
fn padded_order(user_id: i64, len: usize) -> Vec<u8> {
    let with = |pad: String| {
        json!({"user_id": user_id, "product_name": "Big", "amount": 100, "pad": pad}).to_string()
    };
    let empty = with(String::new()).len();
    let bytes = with("p".repeat(len - empty)).into_bytes();
    assert_eq!(bytes.len(), len);
    bytes
}

/// The same bytes sent chunked (no content-length).
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

fn allow(reply: &Reply) -> BTreeSet<String> {
    reply
        .header("allow")
        .unwrap_or_else(|| panic!("no Allow header: {}", reply.text))
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect()
}

#[test]
fn the_shop_manifest_runs_the_built_guests() {
    let manifest = trellis_tests::shop_manifest();
    let app = trellis_tests::shop_app();
    assert!(
        !manifest.contains("target/wasm32-wasip2/release/"),
        "{manifest}"
    );
    assert!(!manifest.contains(".build]"), "{manifest}");
    for guest in ["user", "order", "payment"] {
        let path = trellis_tests::guest(guest).display().to_string();
        assert!(manifest.contains(&path), "{guest}: {manifest}");
    }
    for line in manifest.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("migrations = \"") {
            let dir = value.trim_end_matches('"');
            assert!(std::path::Path::new(dir).is_relative(), "{line}");
            assert!(app.path().join(dir).is_dir(), "{line}");
        }
    }
}

// --- POST /orders -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn create_answers_201_pending_with_location() {
    let shop = Shop::start("orders_create");
    let user = create_user(&shop, "ann@example.com").await;

    let reply = post_order(&shop, order_body(user, "Lamp", 2500), None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_order(&reply.body, user, "Lamp", 2500);
    assert_eq!(reply.body["status"], "pending", "a new order is pending");
    let order = reply.body;
    let location = format!("/orders/{}", id_of(&order));
    assert_eq!(reply.headers["location"], location.as_str());

    // What was created is what is stored (the status may have moved on since),
    // with or without a trailing slash.
    for path in [location.clone(), format!("{location}/")] {
        let reply = shop.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            without_status(&reply.body),
            without_status(&order),
            "{path}"
        );
        assert!(
            ["pending", "paid"].contains(&reply.body["status"].as_str().unwrap_or("")),
            "{}",
            reply.text
        );
    }

    // A trailing slash on the collection; any content type; unknown fields,
    // even ones that look like the server's own, are ignored; the name is
    // trimmed; ids grow.
    let body = json!({
        "user_id": user, "product_name": " \t Desk  lamp \r\n", "amount": 1,
        "id": 999_999, "status": "paid", "created_at": "1999-01-01T00:00:00Z", "extra": [1, {}],
    })
    .to_string();
    for (path, content_type) in [("/orders/", "application/json"), ("/orders", "text/plain")] {
        let reply = send(
            &shop,
            Method::POST,
            path,
            &[("content-type", content_type)],
            body.clone(),
        )
        .await;
        assert_eq!(reply.status, 201, "{path}: {}", reply.text);
        assert_order(&reply.body, user, "Desk  lamp", 1);
        assert_eq!(reply.body["status"], "pending");
        let id = id_of(&reply.body);
        assert!(id > id_of(&order) && id != 999_999, "{}", reply.text);
        assert_eq!(reply.headers["location"], format!("/orders/{id}").as_str());
    }
    // A product name that is a number in a string is a name.
    let reply = post_order(&shop, order_body(user, "5", 7), None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_order(&reply.body, user, "5", 7);
    assert_eq!(order_ids_of(&shop, user).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_fields_are_422_naming_the_field() {
    let shop = Shop::start("orders_invalid");
    let user = create_user(&shop, "ann@example.com").await;
    let with = |field: &str, value: Value| {
        let mut body = json!({"user_id": user, "product_name": "Lamp", "amount": 100});
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = json!({"user_id": user, "product_name": "Lamp", "amount": 100});
        body.as_object_mut().expect("object").remove(field);
        body.to_string()
    };

    // Not an object.
    for body in [
        json!([]),
        json!([{"user_id": user, "product_name": "Lamp", "amount": 100}]),
        json!("Lamp"),
        json!(5),
        json!(null),
        json!(true),
    ] {
        post_order(&shop, body.to_string(), None)
            .await
            .assert_invalid("body");
    }

    let bad = [
        (
            "user_id",
            vec![
                json!(0),
                json!(-1),
                json!(5.0),
                json!(1.5),
                json!("5"),
                json!(user.to_string()),
                json!(null),
                json!(true),
                json!([user]),
                json!({"id": user}),
            ],
        ),
        (
            "product_name",
            vec![
                json!(""),
                json!("   "),
                json!("\t\r\n"),
                json!("x".repeat(201)),
                json!("é".repeat(201)),
                json!("😀".repeat(201)),
                json!("e\u{301}".repeat(100) + "e"),
                json!("Lamp\u{0}"),
                json!("\u{0}"),
                json!(5),
                json!(null),
                json!(["Lamp"]),
                json!({"name": "Lamp"}),
            ],
        ),
        (
            "amount",
            vec![
                json!(0),
                json!(-1),
                json!(100_000_001),
                json!(i64::MAX),
                json!(5.0),
                json!(100.5),
                json!("5"),
                json!("100"),
                json!(null),
                json!(true),
                json!([100]),
                json!({"cents": 100}),
            ],
        ),
    ];
    for (field, values) in &bad {
        let reply = post_order(&shop, without(field), None).await;
        assert_eq!(reply.status, 422, "{field} missing: {}", reply.text);
        reply.assert_invalid(field);
        for value in values {
            let reply = post_order(&shop, with(field, value.clone()), None).await;
            assert_eq!(reply.status, 422, "{field} = {value}: {}", reply.text);
            reply.assert_invalid(field);
        }
    }
    // Spelled on the wire, to be sure of what is sent.
    for (field, body) in [
        (
            "amount",
            format!(r#"{{"user_id": {user}, "product_name": "Lamp", "amount": 5.0}}"#),
        ),
        (
            "amount",
            format!(r#"{{"user_id": {user}, "product_name": "Lamp", "amount": "5"}}"#),
        ),
        (
            "user_id",
            format!(r#"{{"user_id": {user}.0, "product_name": "Lamp", "amount": 5}}"#),
        ),
        (
            "product_name",
            format!(r#"{{"user_id": {user}, "product_name": "La\u0000mp", "amount": 5}}"#),
        ),
        (
            "amount",
            format!(
                r#"{{"user_id": {user}, "product_name": "Lamp", "amount": 9223372036854775808}}"#
            ),
        ),
        // Field names are case-sensitive: `Amount` is an unknown field.
        (
            "amount",
            format!(r#"{{"user_id": {user}, "product_name": "Lamp", "Amount": 5}}"#),
        ),
    ] {
        let reply = post_order(&shop, body.clone(), None).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        reply.assert_invalid(field);
    }
    // An id beyond a signed 64-bit integer names no user that can exist:
    // a 422 either way.
    let reply = post_order(
        &shop,
        r#"{"user_id": 9223372036854775808, "product_name": "Lamp", "amount": 5}"#,
        None,
    )
    .await;
    let code = reply.body["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        code == "invalid" || code == "unknown_user",
        "{}",
        reply.text
    );
    reply.assert_error(422, &code);
    // Everything missing: one 422 naming one of the fields.
    let message = post_order(&shop, "{}", None)
        .await
        .assert_error(422, "invalid")
        .to_owned();
    assert!(
        ["user_id", "product_name", "amount"]
            .iter()
            .any(|f| message.contains(f)),
        "{message}"
    );
    assert_eq!(order_ids_of(&shop, user).await, Vec::<i64>::new());

    // The edges that are in range; lengths in Unicode scalar values, after
    // trimming.
    let accepted = [
        ("L".to_owned(), 1),
        ("x".repeat(200), 100_000_000),
        ("é".repeat(200), 100_000),
        ("😀".repeat(200), 100_001),
        ("e\u{301}".repeat(100), 42),
        (format!("  {}\t\n", "é".repeat(200)), 43),
    ];
    let mut ids = Vec::new();
    for (name, amount) in &accepted {
        let reply = post_order(&shop, order_body(user, name, *amount), None).await;
        assert_eq!(reply.status, 201, "{name:?} {amount}: {}", reply.text);
        assert_order(&reply.body, user, name.trim(), *amount);
        ids.push(id_of(&reply.body));
    }
    assert_eq!(
        order_ids_of(&shop, user).await,
        ids,
        "only the valid orders exist"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400_before_any_field_rule() {
    let shop = Shop::start("orders_bad_json");
    let user = create_user(&shop, "ann@example.com").await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   ".to_vec(),
        b"{".to_vec(),
        format!(r#"{{"user_id": {user}, "product_name": "Lamp", "amount": 5"#).into_bytes(),
        format!(r#"{{"user_id": {user}, "product_name": "Lamp", "amount": 5,}}"#).into_bytes(),
        format!(r#"{{"user_id": {user}, "product_name": "Lamp", "amount": 5}} {{}}"#).into_bytes(),
        format!(r#"{{'user_id': {user}, 'product_name': 'Lamp', 'amount': 5}}"#).into_bytes(),
        format!("user_id={user}&product_name=Lamp&amount=5").into_bytes(),
        // A body that breaks every field rule, and the syntax: 400 first.
        br#"{"user_id": 0, "amount": "x""#.to_vec(),
        // And one naming an unknown user.
        format!(r#"{{"user_id": {NO_USER}, "product_name": "Lamp", "amount": 5"#).into_bytes(),
        // A raw control character inside a string.
        format!("{{\"user_id\": {user}, \"product_name\": \"La\u{1}mp\", \"amount\": 5}}")
            .into_bytes(),
        // Not UTF-8.
        [
            format!(r#"{{"user_id": {user}, "product_name": ""#).as_bytes(),
            b"\xff\xfe",
            br#"", "amount": 5}"#,
        ]
        .concat(),
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let reply = post_order(&shop, body, None).await;
        assert_eq!(reply.status, 400, "{shown:?}: {}", reply.text);
        reply.assert_error(400, "bad_request");
    }
    assert_eq!(order_ids_of(&shop, user).await, Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_user_is_422_unknown_user_after_the_field_rules() {
    let shop = Shop::start("orders_unknown_user");
    let user = create_user(&shop, "ann@example.com").await;

    for missing in [NO_USER, user + 1, i64::MAX] {
        let reply = post_order(&shop, order_body(missing, "Lamp", 5), None).await;
        assert_eq!(reply.status, 422, "user {missing}: {}", reply.text);
        reply.assert_error(422, "unknown_user");
    }
    // A field rule broken as well: `invalid` comes first.
    let reply = post_order(&shop, order_body(NO_USER, "Lamp", 0), None).await;
    reply.assert_invalid("amount");
    let reply = post_order(&shop, order_body(NO_USER, "", 5), None).await;
    reply.assert_invalid("product_name");
    // And JSON syntax before both.
    post_order(
        &shop,
        format!(r#"{{"user_id": {NO_USER}, "amount": 0"#),
        None,
    )
    .await
    .assert_error(400, "bad_request");

    // Nothing was created for anyone.
    for who in [NO_USER, user + 1, user] {
        assert_eq!(order_ids_of(&shop, who).await, Vec::<i64>::new(), "{who}");
    }
    // The user's own orders still work.
    create_order(&shop, user, "Lamp", 5).await;
}

// --- Idempotency-Key --------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_with_the_same_key_and_body_replays_the_first_201() {
    let shop = Shop::start("orders_idem_replay");
    let user = create_user(&shop, "ann@example.com").await;
    let key = "order-7f3c2a";
    let body = format!(r#"{{"user_id":{user},"product_name":"Lamp","amount":2500}}"#);

    let first = post_order(&shop, body.clone(), Some(key)).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_order(&first.body, user, "Lamp", 2500);
    assert_eq!(first.body["status"], "pending");
    let location = first.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("/orders/{}", id_of(&first.body)));

    let assert_replay = |reply: &Reply, what: &str| {
        assert_eq!(reply.status, 201, "{what}: {}", reply.text);
        assert_eq!(
            reply.text, first.text,
            "{what}: the same body, byte for byte"
        );
        assert_eq!(reply.header("location"), Some(location.as_str()), "{what}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{what}"
        );
    };
    let again = post_order(&shop, body.clone(), Some(key)).await;
    assert_replay(&again, "the same bytes");

    // Equal as JSON values: other key order, whitespace, escapes.
    let equal = [
        format!("{{ \"amount\": 2500,\n  \"product_name\": \"Lamp\",\n  \"user_id\": {user} }}"),
        format!(
            "\n\t{{\"product_name\" : \"Lamp\" , \"user_id\" : {user} , \"amount\" : 2500}}  \n"
        ),
        format!(r#"{{"user_id":{user},"product_name":"\u004Camp","amount":2500}}"#),
    ];
    for body in &equal {
        let reply = post_order(&shop, body.clone(), Some(key)).await;
        assert_replay(&reply, body);
    }

    // Once the order has moved on, the replay is still the first answer.
    let settled = assert_settles(&shop, &first.body, SETTLE).await;
    assert_eq!(settled["status"], "paid");
    let late = post_order(&shop, body.clone(), Some(key)).await;
    assert_replay(&late, "after the order was paid");
    assert_eq!(late.body["status"], "pending", "the body as it was then");

    // Exactly one order, and one payment, came of all that.
    assert_eq!(order_ids_of(&shop, user).await, vec![id_of(&first.body)]);
    assert_eq!(payments_of(&shop, id_of(&first.body)).await.len(), 1);

    // The same body without the key, or with another key, is another order.
    let other = post_order(&shop, body.clone(), None).await;
    assert_eq!(other.status, 201, "{}", other.text);
    let third = post_order(&shop, body.clone(), Some("another-key")).await;
    assert_eq!(third.status, 201, "{}", third.text);
    let ids = BTreeSet::from([id_of(&first.body), id_of(&other.body), id_of(&third.body)]);
    assert_eq!(ids.len(), 3, "three distinct orders");
    assert_eq!(order_ids_of(&shop, user).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_key_with_another_body_is_409() {
    let shop = Shop::start("orders_idem_conflict");
    let ann = create_user(&shop, "ann@example.com").await;
    let bob = create_user(&shop, "bob@example.com").await;
    let key = "k-conflict";
    let first = post_order(&shop, order_body(ann, "Lamp", 2500), Some(key)).await;
    assert_eq!(first.status, 201, "{}", first.text);

    for body in [
        order_body(ann, "Lamp", 2501),
        order_body(ann, "lamp", 2500),
        // Equal after trimming, or but for an unknown field, is not equal as
        // JSON values.
        order_body(ann, "Lamp ", 2500),
        json!({"user_id": ann, "product_name": "Lamp", "amount": 2500, "note": "x"}).to_string(),
        // Keys are the app's, not the user's.
        order_body(bob, "Lamp", 2500),
    ] {
        let reply = post_order(&shop, body.clone(), Some(key)).await;
        assert_eq!(reply.status, 409, "{body}: {}", reply.text);
        reply.assert_error(409, "conflict");
    }
    // The conflicts created nothing, and the first answer stands.
    assert_eq!(order_ids_of(&shop, ann).await, vec![id_of(&first.body)]);
    assert_eq!(order_ids_of(&shop, bob).await, Vec::<i64>::new());
    let again = post_order(&shop, order_body(ann, "Lamp", 2500), Some(key)).await;
    assert_eq!((again.status, &again.text), (first.status, &first.text));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_has_1_to_255_characters() {
    let shop = Shop::start("orders_idem_length");
    let user = create_user(&shop, "ann@example.com").await;

    for key in [String::new(), "k".repeat(256), "k".repeat(1000)] {
        let reply = post_order(&shop, order_body(user, "Lamp", 5), Some(&key)).await;
        assert_eq!(reply.status, 400, "a key of {}: {}", key.len(), reply.text);
        reply.assert_error(400, "bad_request");
    }
    // A header is checked before the fields.
    post_order(&shop, order_body(user, "", 0), Some(&"k".repeat(256)))
        .await
        .assert_error(400, "bad_request");
    assert_eq!(order_ids_of(&shop, user).await, Vec::<i64>::new());

    let mut ids = Vec::new();
    for key in ["k".to_owned(), "k".repeat(255)] {
        let body = order_body(user, "Lamp", 5);
        let reply = post_order(&shop, body.clone(), Some(&key)).await;
        assert_eq!(reply.status, 201, "a key of {}: {}", key.len(), reply.text);
        let again = post_order(&shop, body, Some(&key)).await;
        assert_eq!(again.text, reply.text, "a key of {} replays", key.len());
        ids.push(id_of(&reply.body));
    }
    assert_eq!(order_ids_of(&shop, user).await, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_repeats_create_one_order_and_all_answer_it() {
    let shop = Shop::start("orders_idem_concurrent");
    let user = create_user(&shop, "ann@example.com").await;
    let body = order_body(user, "Lamp", 2500);

    for round in 0..3 {
        let key = format!("concurrent-{round}");
        let replies =
            futures::future::join_all((0..10).map(|_| post_order(&shop, body.clone(), Some(&key))))
                .await;
        let first = &replies[0];
        assert_eq!(first.status, 201, "{}", first.text);
        assert_order(&first.body, user, "Lamp", 2500);
        for reply in &replies {
            assert_eq!(reply.status, 201, "round {round}: {}", reply.text);
            assert_eq!(reply.text, first.text, "round {round}: one answer for all");
            assert_eq!(reply.header("location"), first.header("location"));
        }
    }
    let ids = order_ids_of(&shop, user).await;
    assert_eq!(ids.len(), 3, "one order per key: {ids:?}");
    for id in ids {
        assert_settles(&shop, &get_order(&shop, id).await, SETTLE).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_failed_is_not_remembered() {
    let shop = Shop::start("orders_idem_failed");
    let user = create_user(&shop, "ann@example.com").await;

    // A 422 unknown_user is answered again, then the key is free for a 201.
    let key = "k-unknown-user";
    for _ in 0..2 {
        post_order(&shop, order_body(NO_USER, "Lamp", 5), Some(key))
            .await
            .assert_error(422, "unknown_user");
    }
    let created = post_order(&shop, order_body(user, "Lamp", 5), Some(key)).await;
    assert_eq!(created.status, 201, "{}", created.text);
    // Now the 201 is the key's: a replay, and the failed body is another body.
    let again = post_order(&shop, order_body(user, "Lamp", 5), Some(key)).await;
    assert_eq!((again.status, &again.text), (created.status, &created.text));
    // The failed body is now another body for this key: a 409, or (api.md
    // does not order the two) its unknown user again; never a 201.
    let reply = post_order(&shop, order_body(NO_USER, "Lamp", 5), Some(key)).await;
    match reply.status.as_u16() {
        409 => drop(reply.assert_error(409, "conflict")),
        _ => drop(reply.assert_error(422, "unknown_user")),
    }

    // The same with a 422 invalid, a 400, and a retry of the very same body.
    let key = "k-invalid";
    post_order(&shop, order_body(user, "Lamp", 0), Some(key))
        .await
        .assert_invalid("amount");
    post_order(&shop, "{", Some(key))
        .await
        .assert_error(400, "bad_request");
    let body = order_body(user, "Lamp", 6);
    let created6 = post_order(&shop, body.clone(), Some(key)).await;
    assert_eq!(created6.status, 201, "{}", created6.text);

    assert_eq!(
        order_ids_of(&shop, user).await,
        vec![id_of(&created.body), id_of(&created6.body)]
    );
}

// --- GET /orders ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn get_order_is_200_404_or_400() {
    let shop = Shop::start("orders_get");
    let user = create_user(&shop, "ann@example.com").await;
    let order = create_order(&shop, user, "Lamp", 5).await;
    let id = id_of(&order);

    for path in [format!("/orders/{id}"), format!("/orders/{id}/")] {
        let reply = shop.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(without_status(&reply.body), without_status(&order));
    }
    for path in [
        format!("/orders/{}", id + 1),
        "/orders/12345".to_owned(),
        "/orders/9223372036854775807".to_owned(),
        "/orders/9223372036854775807/".to_owned(),
    ] {
        shop.get(&path).await.assert_error(404, "not_found");
    }
    for bad in [
        "0",
        "-1",
        "01",
        "+1",
        "abc",
        "1a",
        "1.0",
        "1e3",
        "%31",
        "9223372036854775808",
        "99999999999999999999999",
    ] {
        for path in [format!("/orders/{bad}"), format!("/orders/{bad}/")] {
            let reply = shop.get(&path).await;
            assert_eq!(reply.status, 400, "{path}: {}", reply.text);
            reply.assert_error(400, "bad_request");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_of_a_user_are_listed_by_id() {
    let shop = Shop::start("orders_list");
    let ann = create_user(&shop, "ann@example.com").await;
    let bob = create_user(&shop, "bob@example.com").await;

    // The user_id parameter is required and follows the path-id rule.
    for query in [
        "",
        "?",
        "?user_id",
        "?user_id=",
        "?user_id=0",
        "?user_id=-1",
        "?user_id=01",
        "?user_id=+1",
        "?user_id=abc",
        "?user_id=1.0",
        "?user_id=9223372036854775808",
        "?userid=1",
        "?limit=10",
    ] {
        let reply = shop.get(&format!("/orders{query}")).await;
        assert_eq!(reply.status, 400, "/orders{query}: {}", reply.text);
        reply.assert_error(400, "bad_request");
    }
    // An unknown user has no orders (not a 404).
    for user in [NO_USER, i64::MAX] {
        let reply = shop.get(&format!("/orders?user_id={user}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.body, json!({"items": []}));
    }
    assert_eq!(order_ids_of(&shop, ann).await, Vec::<i64>::new());

    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for n in 0..6 {
        let (user, list) = if n % 3 == 1 {
            (bob, &mut theirs)
        } else {
            (ann, &mut mine)
        };
        list.push(create_order(&shop, user, &format!("Item {n}"), 100 + n).await);
    }
    let ids = |orders: &[Value]| orders.iter().map(id_of).collect::<Vec<_>>();
    assert_eq!(order_ids_of(&shop, ann).await, ids(&mine));
    assert_eq!(order_ids_of(&shop, bob).await, ids(&theirs));
    assert!(ids(&mine).windows(2).all(|w| w[0] < w[1]));

    // Items are whole orders; unknown parameters and a trailing slash ignored.
    for path in [
        format!("/orders?user_id={ann}"),
        format!("/orders/?user_id={ann}"),
        format!("/orders?sort=desc&user_id={ann}&limit=1"),
    ] {
        let reply = shop.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        let items = reply.body["items"].as_array().expect("items");
        assert_eq!(items.len(), mine.len(), "{path}");
        for (item, order) in items.iter().zip(&mine) {
            assert_eq!(keys(item).len(), 6, "{item}");
            assert_eq!(without_status(item), without_status(order), "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_orders_are_composed_from_both_services() {
    let shop = Shop::start("orders_composed");
    let ann = create_user(&shop, "ann@example.com").await;
    let bob = create_user(&shop, "bob@example.com").await;
    let mine = [
        create_order(&shop, ann, "Lamp", 100).await,
        create_order(&shop, bob, "Desk", 200).await,
        create_order(&shop, ann, "Chair", 300_000).await,
    ];

    let user = shop.get(&format!("/users/{ann}")).await;
    assert_eq!(user.status, 200, "{}", user.text);
    for path in [
        format!("/users/{ann}/orders"),
        format!("/users/{ann}/orders/"),
    ] {
        let reply = shop.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            keys(&reply.body),
            BTreeSet::from(["user", "orders"]),
            "{path}"
        );
        assert_eq!(reply.body["user"], user.body, "{path}");
        let orders = reply.body["orders"].as_array().expect("orders");
        let expected = [&mine[0], &mine[2]];
        assert_eq!(orders.len(), 2, "{path}: {}", reply.text);
        for (order, want) in orders.iter().zip(expected) {
            assert_eq!(keys(order).len(), 6, "{order}");
            assert_eq!(without_status(order), without_status(want), "{path}");
        }
    }

    // A user without orders; a user that does not exist; malformed ids.
    let carl = create_user(&shop, "carl@example.com").await;
    let reply = shop.get(&format!("/users/{carl}/orders")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["orders"], json!([]));
    assert_eq!(reply.body["user"]["id"], carl);
    for missing in [NO_USER, carl + 1, i64::MAX] {
        shop.get(&format!("/users/{missing}/orders"))
            .await
            .assert_error(404, "not_found");
    }
    for bad in ["0", "-1", "01", "abc", "9223372036854775808"] {
        let reply = shop.get(&format!("/users/{bad}/orders")).await;
        assert_eq!(reply.status, 400, "/users/{bad}/orders: {}", reply.text);
        reply.assert_error(400, "bad_request");
    }
}

// --- general rules on the order and payment routes ----------------------------

#[tokio::test(flavor = "multi_thread")]
async fn other_methods_are_405_with_allow_and_unknown_paths_404() {
    let shop = Shop::start("orders_routes");
    let user = create_user(&shop, "ann@example.com").await;
    let order = id_of(&create_order(&shop, user, "Lamp", 5).await);
    let set =
        |methods: &[&str]| -> BTreeSet<String> { methods.iter().map(|m| m.to_string()).collect() };

    let cases = [
        ("/orders".to_owned(), set(&["GET", "POST"])),
        ("/orders/".to_owned(), set(&["GET", "POST"])),
        (format!("/orders/{order}"), set(&["GET"])),
        ("/orders/abc".to_owned(), set(&["GET"])),
        ("/payments".to_owned(), set(&["GET"])),
        ("/payments/1".to_owned(), set(&["GET"])),
        (format!("/users/{user}/orders"), set(&["GET"])),
    ];
    for (path, allowed) in &cases {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            if allowed.contains(method.as_str()) {
                continue;
            }
            let reply = send(&shop, method.clone(), path, &[], "not json").await;
            assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text);
            reply.assert_error(405, "method_not_allowed");
            assert_eq!(&allow(&reply), allowed, "{method} {path}");
        }
    }
    // Nothing was changed by them.
    assert_eq!(order_ids_of(&shop, user).await, vec![order]);

    for path in [
        format!("/orders/{order}/x"),
        format!("/orders/{order}//"),
        "/orders//".to_owned(),
        "/ordersx".to_owned(),
        "/order".to_owned(),
        "/payments/1/x".to_owned(),
        "/paymentsx".to_owned(),
        "/payment".to_owned(),
        format!("/users/{user}/orders/x"),
    ] {
        shop.get(&path).await.assert_error(404, "not_found");
        // The route comes before the method.
        send(&shop, Method::DELETE, &path, &[], Vec::new())
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn order_bodies_over_1_mib_are_413() {
    let shop = Shop::start("orders_body_limit");
    let user = create_user(&shop, "ann@example.com").await;

    // Exactly the limit is read and judged on its content.
    let reply = post_order(&shop, padded_order(user, LIMIT), None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_order(&reply.body, user, "Big", 100);
    let reply = post_order(&shop, chunked(padded_order(user, LIMIT)), None).await;
    assert_eq!(reply.status, 201, "chunked: {}", reply.text);

    // One byte more is too large, chunked or not, key or not, whatever it says.
    for key in [None, Some("big")] {
        post_order(&shop, padded_order(user, LIMIT + 1), key)
            .await
            .assert_error(413, "payload_too_large");
        post_order(&shop, chunked(padded_order(user, LIMIT + 1)), key)
            .await
            .assert_error(413, "payload_too_large");
    }
    post_order(&shop, vec![b'{'; 2 * LIMIT], Some(&"k".repeat(300)))
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(order_ids_of(&shop, user).await.len(), 2);
}

// --- payments ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn orders_within_the_limit_are_paid() {
    let shop = Shop::start("orders_paid");
    let user = create_user(&shop, "ann@example.com").await;
    for amount in [1, 2500, PAYMENT_LIMIT] {
        let order = create_order(&shop, user, "Lamp", amount).await;
        let (settled, took) = wait_final(&shop, id_of(&order), SETTLE).await;
        assert_eq!(settled["status"], "paid", "{settled}");
        eprintln!("order of {amount} paid after {took:?} (api.md: within 5 s when idle)");
        assert_settles(&shop, &order, SETTLE).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_over_the_limit_are_cancelled_with_a_failed_payment() {
    let shop = Shop::start("orders_cancelled");
    let user = create_user(&shop, "ann@example.com").await;
    for amount in [PAYMENT_LIMIT + 1, 100_000_000] {
        let order = create_order(&shop, user, "Car", amount).await;
        let (settled, took) = wait_final(&shop, id_of(&order), SETTLE).await;
        assert_eq!(settled["status"], "cancelled", "{settled}");
        eprintln!("order of {amount} cancelled after {took:?} (api.md: within 5 s when idle)");
        let payments = payments_of(&shop, id_of(&order)).await;
        assert_eq!(payments.len(), 1, "{payments:?}");
        assert_eq!(payments[0]["status"], "failed");
        assert_eq!(payments[0]["reason"], "limit_exceeded");
        assert_settles(&shop, &order, SETTLE).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn paid_and_cancelled_are_final_and_there_is_one_payment_each() {
    let shop = Shop::start("orders_final");
    let ann = create_user(&shop, "ann@example.com").await;
    let bob = create_user(&shop, "bob@example.com").await;

    // A burst of orders, from two users, both outcomes.
    let mut orders = Vec::new();
    for n in 0..12i64 {
        let user = if n % 2 == 0 { ann } else { bob };
        let amount = if n % 3 == 0 {
            PAYMENT_LIMIT + n
        } else {
            1000 + n
        };
        orders.push(create_order(&shop, user, &format!("Item {n}"), amount).await);
    }
    let mut settled = Vec::new();
    for order in &orders {
        settled.push(assert_settles(&shop, order, SETTLE).await);
    }

    // Long enough for any late or repeated event (the shop retries every
    // 200 ms, five times) to have arrived: nothing moves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut payment_ids = BTreeSet::new();
    for (order, before) in orders.iter().zip(&settled) {
        let id = id_of(order);
        assert_eq!(&get_order(&shop, id).await, before, "order {id} changed");
        let payments = payments_of(&shop, id).await;
        assert_eq!(payments.len(), 1, "order {id}: {payments:?}");
        assert!(
            payment_ids.insert(id_of(&payments[0])),
            "a payment per order"
        );
    }
    let mut all = order_ids_of(&shop, ann).await;
    all.extend(order_ids_of(&shop, bob).await);
    assert_eq!(all.len(), orders.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_lookups_are_200_404_or_400() {
    let shop = Shop::start("orders_payments_get");
    let user = create_user(&shop, "ann@example.com").await;
    let order = create_order(&shop, user, "Lamp", 5).await;
    assert_settles(&shop, &order, SETTLE).await;
    let payment = payments_of(&shop, id_of(&order)).await.remove(0);
    let pid = id_of(&payment);

    for path in [format!("/payments/{pid}"), format!("/payments/{pid}/")] {
        let reply = shop.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.body, payment, "{path}");
    }
    for path in [
        format!("/payments?order_id={}", id_of(&order)),
        format!("/payments/?order_id={}", id_of(&order)),
        format!("/payments?x=1&order_id={}", id_of(&order)),
    ] {
        let reply = shop.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.body, json!({"items": [payment]}), "{path}");
    }
    for path in [
        format!("/payments/{}", pid + 1000),
        "/payments/9223372036854775807".to_owned(),
    ] {
        shop.get(&path).await.assert_error(404, "not_found");
    }
    // An order that does not exist has no payments.
    let reply = shop.get(&format!("/payments?order_id={NO_ORDER}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"items": []}));

    for bad in ["0", "-1", "01", "abc", "1.0", "9223372036854775808"] {
        for path in [
            format!("/payments/{bad}"),
            format!("/payments?order_id={bad}"),
        ] {
            let reply = shop.get(&path).await;
            assert_eq!(reply.status, 400, "{path}: {}", reply.text);
            reply.assert_error(400, "bad_request");
        }
    }
    for query in ["", "?", "?order_id", "?order_id=", "?id=1"] {
        let reply = shop.get(&format!("/payments{query}")).await;
        assert_eq!(reply.status, 400, "/payments{query}: {}", reply.text);
        reply.assert_error(400, "bad_request");
    }
}

// --- health and the broker ----------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_with_every_dependency_up() {
    let shop = Shop::start("orders_health");
    for path in ["/health", "/health/"] {
        let reply = shop.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.body, json!({"status": "ok"}), "{path}");
    }
    // The broker connection may still be opening when the host starts to serve.
    let reply = wait_ready_status(&shop, 200, Duration::from_secs(20)).await;
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.body,
        json!({"status": "ready", "dependencies": {"database": "up", "broker": "up"}})
    );
    let reply = shop.get("/health/ready/").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// The broker's answer while it is down, by api.md.
fn assert_broker_down(reply: &Reply) {
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(reply.header("retry-after").is_some(), "no Retry-After");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.body,
        json!({"status": "unavailable", "dependencies": {"database": "up", "broker": "down"}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_are_taken_while_the_broker_is_unreachable_from_the_start() {
    // The shared RabbitMQ keeps running: only this test's vhost refuses
    // connections, until access is given back.
    let db = TestDatabase::new("orders_broker_start");
    let broker = TestBroker::new("orders_broker_start");
    broker.revoke_access();
    let shop = Shop::start_in(db, broker, &[]);
    let user = create_user(&shop, "ann@example.com").await;

    let reply = shop.get("/health/ready").await;
    assert_broker_down(&reply);

    let paid = create_order(&shop, user, "Lamp", 2500).await;
    let cancelled = create_order(&shop, user, "Car", PAYMENT_LIMIT + 1).await;
    let keyed = post_order(&shop, order_body(user, "Desk", 300), Some("while-down")).await;
    assert_eq!(keyed.status, 201, "{}", keyed.text);
    // Without the broker no payment can happen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for order in [&paid, &cancelled, &keyed.body] {
        assert_eq!(get_order(&shop, id_of(order)).await["status"], "pending");
        assert_eq!(payments_of(&shop, id_of(order)).await, Vec::<Value>::new());
    }
    assert_broker_down(&shop.get("/health/ready").await);

    shop.broker.restore_access();
    for order in [&paid, &cancelled, &keyed.body] {
        assert_settles(&shop, order, RECOVERY).await;
    }
    let reply = wait_ready_status(&shop, 200, RECOVERY).await;
    assert_eq!(
        reply.body,
        json!({"status": "ready", "dependencies": {"database": "up", "broker": "up"}})
    );
    // And the orders taken since are paid as usual.
    let after = create_order(&shop, user, "Lamp", 10).await;
    assert_settles(&shop, &after, SETTLE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_are_taken_while_the_broker_is_lost_and_paid_once_it_is_back() {
    let shop = Shop::start_with("orders_broker_lost", &["--metrics-listen", "127.0.0.1:0"]);
    let user = create_user(&shop, "ann@example.com").await;
    let before = create_order(&shop, user, "Lamp", 100).await;
    assert_settles(&shop, &before, SETTLE).await;
    wait_ready_status(&shop, 200, Duration::from_secs(20)).await;

    // The broker goes away (for this vhost): connections closed, new ones refused.
    shop.broker.revoke_access();
    shop.broker.close_connections();
    let reply = wait_ready_status(&shop, 503, RECOVERY).await;
    assert_broker_down(&reply);

    let paid = create_order(&shop, user, "Lamp", 2500).await;
    let cancelled = create_order(&shop, user, "Car", PAYMENT_LIMIT + 1).await;
    // The metrics show the two events waiting in the outbox.
    let backlog = |rows: u32| {
        format!("trellis_outbox_backlog{{tenant=\"\",app=\"shop\",component=\"order\"}} {rows}")
    };
    wait_for_metric(&shop, &backlog(2)).await;

    shop.broker.restore_access();
    for order in [&paid, &cancelled] {
        assert_settles(&shop, order, RECOVERY).await;
    }
    wait_for_metric(&shop, &backlog(0)).await;
    // The pools behind it: one per service's role, under the host's cap.
    let text = shop.trellis.metrics_text().await;
    let gauge = |name: &str| -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(gauge("trellis_db_connections_max"), 64);
    assert!(gauge("trellis_db_pools") >= 3, "{text}");
    assert!(gauge("trellis_db_connections_idle") <= gauge("trellis_db_connections_open"));
    wait_ready_status(&shop, 200, RECOVERY).await;
    let after = create_order(&shop, user, "Lamp", 10).await;
    assert_settles(&shop, &after, SETTLE).await;
    assert_eq!(order_ids_of(&shop, user).await.len(), 4);
}

async fn wait_for_metric(shop: &Shop, line: &str) {
    let started = Instant::now();
    loop {
        let text = shop.trellis.metrics_text().await;
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(started.elapsed() < RECOVERY, "no `{line}` in:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The user service is made to fail (its table renamed away, so every
/// lookup errors): after three failed lookups the order service's calls to
/// it are answered `503` by the host without reaching it, and once the user
/// service works again a probe closes the circuit and orders are created.
#[tokio::test]
async fn the_user_services_circuit_opens_while_it_fails_and_closes_after() {
    let shop = Shop::start_with(
        "breaker",
        &[
            "--breaker-failures",
            "3",
            "--breaker-open",
            "1s",
            "--call-retries",
            "0",
        ],
    );
    let user = create_user(&shop, "breaker@example.com").await;
    create_order(&shop, user, "Book", 1500).await;

    let schema = trellis_tests::psql(
        &shop.db.name,
        "SELECT schemaname FROM pg_tables WHERE tablename = 'users'",
    );
    let schema = schema.trim();
    assert!(!schema.is_empty(), "no users table");
    let rename = |from: &str, to: &str| {
        trellis_tests::psql(
            &shop.db.name,
            &format!("ALTER TABLE \"{schema}\".{from} RENAME TO {to}"),
        );
    };
    rename("users", "users_away");
    for _ in 0..3 {
        let reply = post_order(&shop, order_body(user, "Lamp", 900), None).await;
        reply.assert_error(503, "unavailable");
    }
    assert!(
        shop.trellis
            .wait_for_log(|l| l.contains("circuit opened") && l.contains("user.spin.internal")),
        "{}",
        shop.trellis.logs()
    );

    // Back to health; while the circuit is open, still 503.
    rename("users_away", "users");
    let reply = post_order(&shop, order_body(user, "Lamp", 900), None).await;
    reply.assert_error(503, "unavailable");
    assert!(reply.header("retry-after").is_some());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = post_order(&shop, order_body(user, "Lamp", 900), None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert!(
        shop.trellis.wait_for_log(|l| l.contains("circuit closed")),
        "{}",
        shop.trellis.logs()
    );
}
