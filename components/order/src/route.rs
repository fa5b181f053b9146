//! What a request names: the resource behind its path. Pure, so unit-tested
//! natively.

use shop_api::route::{Resource, resource, segment, trim_trailing_slash};

/// The resources the order service answers for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/orders`
    Orders,
    /// `/orders/{id}`, with the id segment still unparsed: a malformed id is
    /// a `400`, which the API checks only after the method (`405`).
    Order(&'a str),
    /// `/users/{id}/orders`, composed from the user and order services.
    UserOrders(&'a str),
}

/// The route a path (without its query) names, or `None` for a `404`. One
/// trailing slash is ignored (`/orders/` is `/orders`); an empty id segment
/// names nothing.
pub fn parse(path: &str) -> Option<Route<'_>> {
    if let Some(orders) = resource(path, "/orders") {
        return Some(match orders {
            Resource::Collection => Route::Orders,
            Resource::Item(id) => Route::Order(id),
        });
    }
    let path = trim_trailing_slash(path);
    let id = path.strip_prefix("/users/")?.strip_suffix("/orders")?;
    segment(id).then_some(Route::UserOrders(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ignore_one_trailing_slash() {
        assert_eq!(parse("/orders"), Some(Route::Orders));
        assert_eq!(parse("/orders/"), Some(Route::Orders));
        assert_eq!(parse("/orders/7"), Some(Route::Order("7")));
        assert_eq!(parse("/orders/7/"), Some(Route::Order("7")));
        assert_eq!(parse("/orders/x"), Some(Route::Order("x")));
        assert_eq!(parse("/users/7/orders"), Some(Route::UserOrders("7")));
        assert_eq!(parse("/users/7/orders/"), Some(Route::UserOrders("7")));
        assert_eq!(parse("/users/x/orders"), Some(Route::UserOrders("x")));
        for path in [
            "/",
            "/ordersx",
            "/orders//",
            "/orders/7//",
            "/orders/7/items",
            "/users",
            "/users/7",
            "/users//orders",
            "/users/7/8/orders",
            "/users/7/ordersx",
            "/users/7/orders//",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }
}
