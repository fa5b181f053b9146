//! The shop's OpenAPI document (`openapi.json`): it covers every route of
//! the API contract (docs/api.md of the reference app), the host serves it,
//! and the running shop answers as it says — every answer's status is
//! documented for its operation and its body validates against the
//! documented schema.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trellis_tests::{Reply, Shop, workspace_root};

fn document() -> Value {
    let path = workspace_root().join("openapi.json");
    let text = std::fs::read_to_string(&path).expect("read openapi.json");
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

/// Every route of api.md, and nothing else.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/users"),
    ("get", "/users"),
    ("get", "/users/{id}"),
    ("get", "/users/{id}/orders"),
    ("post", "/orders"),
    ("get", "/orders"),
    ("get", "/orders/{id}"),
    ("get", "/payments"),
    ("get", "/payments/{id}"),
    ("get", "/health"),
    ("get", "/health/ready"),
];

/// Every error code of api.md's table.
const ERROR_CODES: &[&str] = &[
    "bad_request",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "conflict",
    "payload_too_large",
    "invalid",
    "unknown_user",
    "rate_limited",
    "internal",
    "unavailable",
    "timeout",
];

#[test]
fn the_document_covers_the_contract() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);

    let text = doc.to_string();
    for code in ERROR_CODES {
        assert!(
            text.contains(&format!("\"{code}\"")),
            "error code {code} is not documented"
        );
    }
    // Every schema compiles.
    for (name, _) in doc["components"]["schemas"].as_object().expect("schemas") {
        validator(
            &doc,
            &json!({"$ref": format!("#/components/schemas/{name}")}),
        );
    }
}

/// A validator for `schema`, with the document's components in reach of `$ref`.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut schema = schema.clone();
    schema["components"] = doc["components"].clone();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

/// `$ref: #/components/responses/X` resolved.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling {reference}"))
        }
        None => value,
    }
}

/// The documented path template matching a concrete path.
fn template<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
        })
}

/// Checks one answer against the document: a documented operation answers
/// a documented status with a body of its schema and the headers it
/// requires; an undocumented method is `405` with `Allow`.
fn check(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let what = format!("{method} {path} -> {}: {}", reply.status, reply.text);
    let template = template(doc, path).unwrap_or_else(|| panic!("undocumented path: {what}"));
    let Some(operation) = doc["paths"][template].get(method.to_ascii_lowercase()) else {
        assert_eq!(reply.status, 405, "{what}");
        assert!(reply.header("allow").is_some(), "405 without Allow: {what}");
        let response = resolve(doc, &doc["components"]["responses"]["MethodNotAllowed"]);
        let schema = &response["content"]["application/json"]["schema"];
        assert!(validator(doc, schema).is_valid(&reply.body), "{what}");
        return;
    };
    let status = reply.status.as_str().to_owned();
    let response = operation["responses"]
        .get(&status)
        .map(|r| resolve(doc, r))
        .unwrap_or_else(|| panic!("status not documented for the operation: {what}"));
    let schema = &response["content"]["application/json"]["schema"];
    let validator = validator(doc, schema);
    let errors: Vec<String> = validator
        .iter_errors(&reply.body)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{what}\n{errors:#?}");
    for (name, header) in response["headers"].as_object().into_iter().flatten() {
        if header["required"] == true || name == "Location" {
            assert!(reply.header(name).is_some(), "no {name} header: {what}");
        }
    }
}

async fn send(shop: &Shop, method: &str, path: &str, body: Option<&str>) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = shop.http().request(method, shop.url(path));
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    Reply::read(request.send().await.expect("request")).await
}

#[tokio::test]
async fn the_shop_serves_its_document_and_answers_as_it_says() {
    let doc = document();
    let shop = Shop::start("openapi");

    let served = shop.get("/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.body, doc);

    let mut checked = 0;
    let mut exchange = async |method: &str, path: &str, body: Option<Value>| {
        let text = body.map(|b| b.to_string());
        let reply = send(&shop, method, path, text.as_deref()).await;
        check(&doc, method, path, &reply);
        checked += 1;
        reply
    };

    let user = exchange(
        "POST",
        "/users",
        Some(json!({"email": "oa@example.com", "name": "Ada"})),
    )
    .await;
    assert_eq!(user.status, 201);
    let user_id = user.body["id"].as_i64().expect("id");
    assert_eq!(
        exchange(
            "POST",
            "/users",
            Some(json!({"email": "OA@example.com", "name": "B"}))
        )
        .await
        .status,
        409
    );
    assert_eq!(
        exchange(
            "POST",
            "/users",
            Some(json!({"email": "nope", "name": "B"}))
        )
        .await
        .status,
        422
    );
    assert_eq!(exchange("GET", "/users", None).await.status, 200);
    assert_eq!(exchange("GET", "/users?limit=0", None).await.status, 400);
    assert_eq!(
        exchange("GET", &format!("/users/{user_id}"), None)
            .await
            .status,
        200
    );
    assert_eq!(exchange("GET", "/users/999999", None).await.status, 404);
    assert_eq!(exchange("GET", "/users/abc", None).await.status, 400);
    assert_eq!(
        exchange("DELETE", &format!("/users/{user_id}"), None)
            .await
            .status,
        405
    );

    let order = exchange(
        "POST",
        "/orders",
        Some(json!({"user_id": user_id, "product_name": "Book", "amount": 1500})),
    )
    .await;
    assert_eq!(order.status, 201);
    let order_id = order.body["id"].as_i64().expect("id");
    let unknown = json!({"user_id": 999999, "product_name": "Book", "amount": 1});
    assert_eq!(exchange("POST", "/orders", Some(unknown)).await.status, 422);
    assert_eq!(
        exchange("GET", &format!("/orders/{order_id}"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        exchange("GET", &format!("/orders?user_id={user_id}"), None)
            .await
            .status,
        200
    );
    assert_eq!(exchange("GET", "/orders", None).await.status, 400);
    assert_eq!(
        exchange("GET", &format!("/users/{user_id}/orders"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        exchange("GET", "/users/999999/orders", None).await.status,
        404
    );

    let started = Instant::now();
    let payment_id = loop {
        let payments = exchange("GET", &format!("/payments?order_id={order_id}"), None).await;
        if let Some(id) = payments.body["items"][0]["id"].as_i64() {
            break id;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no payment");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        exchange("GET", &format!("/payments/{payment_id}"), None)
            .await
            .status,
        200
    );
    assert_eq!(exchange("GET", "/payments/999999", None).await.status, 404);
    assert_eq!(exchange("GET", "/payments", None).await.status, 400);

    assert_eq!(exchange("GET", "/health", None).await.status, 200);
    assert_eq!(exchange("GET", "/health/ready", None).await.status, 200);
    assert_eq!(exchange("POST", "/health", None).await.status, 405);
    assert!(checked >= 24, "{checked}");
}
