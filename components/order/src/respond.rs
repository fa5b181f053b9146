//! What goes back on the wire: the order JSON, lists, and the composed
//! user-with-orders, as application/json. (The error envelope is
//! `shop_api::ApiError`'s.)

use serde_json::{Value, json};
use shop_api::json_response;
use spin_sdk::http::Response;

use crate::db::Order;

/// The body and `Location` of the `201` for a new order, as they are sent
/// and stored for replays.
pub fn created_parts(order: &Order) -> (String, String) {
    (
        order_json(order).to_string(),
        format!("/orders/{}", order.id),
    )
}

/// A `201` from its stored parts, so a replay is byte for byte the first.
pub fn created(body: String, location: String) -> Response {
    Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .header("location", location)
        .body(body)
        .build()
}

pub fn order(order: &Order) -> Response {
    json_response(200, &order_json(order))
}

/// `{"items": [order...]}`.
pub fn items(orders: &[Order]) -> Response {
    json_response(200, &json!({ "items": orders_json(orders) }))
}

/// `{"user": user, "orders": [order...]}`, the user as its service wrote it.
pub fn user_orders(user: Value, orders: &[Order]) -> Response {
    json_response(200, &json!({ "user": user, "orders": orders_json(orders) }))
}

fn orders_json(orders: &[Order]) -> Vec<Value> {
    orders.iter().map(order_json).collect()
}

fn order_json(order: &Order) -> Value {
    json!({
        "id": order.id,
        "user_id": order.user_id,
        "product_name": order.product_name,
        "amount": order.amount,
        "status": order.status,
        "created_at": order.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_api::testing::{body, header};

    fn tea() -> Order {
        Order {
            id: 7,
            user_id: 3,
            product_name: "Tea".into(),
            amount: 250,
            status: "pending".into(),
            created_at: "2025-01-02T03:04:05.000006Z".into(),
        }
    }

    #[test]
    fn created_has_location_and_the_order() {
        let (text, location) = created_parts(&tea());
        let response = created(text.clone(), location);
        assert_eq!(*response.status(), 201);
        assert_eq!(header(&response, "location"), "/orders/7");
        assert_eq!(header(&response, "content-type"), "application/json");
        assert_eq!(response.body(), text.as_bytes());
        assert_eq!(
            body(&response),
            json!({"id": 7, "user_id": 3, "product_name": "Tea", "amount": 250,
                   "status": "pending", "created_at": "2025-01-02T03:04:05.000006Z"})
        );
    }

    #[test]
    fn lists_and_compositions() {
        assert_eq!(body(&items(&[])), json!({"items": []}));
        assert_eq!(body(&items(&[tea()]))["items"][0]["id"], 7);
        let user = json!({"id": 3, "email": "a@b", "name": "A", "created_at": "x"});
        let composed = body(&user_orders(user.clone(), &[tea()]));
        assert_eq!(composed["user"], user);
        assert_eq!(composed["orders"][0]["status"], "pending");
    }
}
