//! What a request's path names, for the shape every service has: a
//! collection (`/users`) and its items (`/users/{id}`). Pure, so unit-tested
//! natively.

/// A collection or one of its items.
#[derive(Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// `/things`
    Collection,
    /// `/things/{id}`, with the id segment still unparsed: a malformed id is
    /// a `400`, which the API checks only after the method (`405`).
    Item(&'a str),
}

/// What `path` (without its query) names under `collection` (e.g.
/// `"/users"`), or `None` for a `404`. One trailing slash is ignored, so
/// `/users/` is `/users` and `/users/7/` is `/users/7`; an empty id segment
/// (`/users//`) names nothing, nor does anything deeper (`/users/7/orders`).
pub fn resource<'a>(path: &'a str, collection: &str) -> Option<Resource<'a>> {
    let path = trim_trailing_slash(path);
    let rest = path.strip_prefix(collection)?;
    if rest.is_empty() {
        return Some(Resource::Collection);
    }
    let id = rest.strip_prefix('/')?;
    segment(id).then_some(Resource::Item(id))
}

/// `path` without one trailing slash, the API's rule for every route
/// (`/users/` is `/users`, `/users//` is `/users/`).
pub fn trim_trailing_slash(path: &str) -> &str {
    path.strip_suffix('/').unwrap_or(path)
}

/// A single non-empty path segment.
pub fn segment(text: &str) -> bool {
    !text.is_empty() && !text.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ignore_one_trailing_slash() {
        let users = |path| resource(path, "/users");
        assert_eq!(users("/users"), Some(Resource::Collection));
        assert_eq!(users("/users/"), Some(Resource::Collection));
        assert_eq!(users("/users/7"), Some(Resource::Item("7")));
        assert_eq!(users("/users/7/"), Some(Resource::Item("7")));
        assert_eq!(users("/users/abc"), Some(Resource::Item("abc")));
        for path in [
            "/",
            "/usersx",
            "/users//",
            "/users/7//",
            "/users/7/orders",
            "/user",
            "/orders",
        ] {
            assert_eq!(users(path), None, "{path}");
        }
    }
}
