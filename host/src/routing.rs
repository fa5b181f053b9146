//! HTTP routing with Spin's semantics, built on `routefinder` as Spin's own
//! router is.
//!
//! Precedence (what `routefinder` gives us once routes are translated):
//! exact routes beat `:name` routes, which beat wildcards; among wildcards the
//! longest prefix wins; `/...` matches everything, including `/`. A request
//! path's trailing slashes are ignored for matching (`/users/` reaches the exact
//! route `/users`), as are repeated slashes between segments. Trailing slashes
//! do show up in `path_info` for wildcard routes, as Spin has always done.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::bail;
use routefinder::{RouteSpec, Segment};

/// Maps request paths to components. Cheap to clone and share between tasks.
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Handler values are indexes into `entries`.
    finder: routefinder::Router<usize>,
    /// In manifest order, for printing the route table.
    entries: Vec<RouteEntry>,
}

#[derive(Debug)]
struct RouteEntry {
    component: String,
    /// As written in the manifest, e.g. `/foo/...`.
    raw_route: String,
    /// With the application base prepended, e.g. `/api/foo/...`.
    based_route: String,
    /// Ends in `/...`.
    wildcard: bool,
}

/// The outcome of routing one request path.
#[derive(Debug, Clone)]
pub struct RouteMatch<'a> {
    entry: &'a RouteEntry,
    named: Vec<(String, String)>,
    path_info: String,
}

impl Router {
    /// Builds a router from `(component id, route as written in the manifest)`
    /// pairs; private routes are simply not passed in. `base` is the
    /// application's `[application.trigger.http] base` and prefixes every route.
    ///
    /// Fails on a malformed route or when two routes are the same (after the base
    /// is applied and `:name` segments are compared by position, not name),
    /// naming both components.
    pub fn build<'a>(
        base: &str,
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<Router> {
        let mut finder = routefinder::Router::new();
        let mut entries: Vec<RouteEntry> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (component, raw_route) in routes {
            if let Err(why) = check_route(raw_route) {
                bail!("component `{component}`: {why}");
            }
            let based_route = join_base(base, raw_route);
            let key = duplicate_key(&based_route);
            if let Some(other) = seen.get(&key).and_then(|&first| entries.get(first)) {
                bail!(
                    "route {raw_route:?} of component `{component}` is the same as route {:?} of component `{}`; each route may be used once",
                    other.raw_route,
                    other.component
                );
            }
            let wildcard = based_route.ends_with("/...");
            // routefinder spells the trailing wildcard `*`.
            let pattern = match based_route.strip_suffix("...") {
                Some(prefix) => format!("{prefix}*"),
                None => based_route.clone(),
            };
            let spec = RouteSpec::try_from(pattern.as_str()).map_err(|e| {
                anyhow::anyhow!("component `{component}`: route {based_route:?}: {e}")
            })?;
            // routefinder panics at match time on these shapes; never let one in.
            if !is_well_formed(&spec) {
                bail!("component `{component}`: route {based_route:?} cannot be matched");
            }
            let index = entries.len();
            finder
                .add(spec, index)
                .map_err(|e| anyhow::anyhow!("component `{component}`: {e}"))?;
            seen.insert(key, index);
            entries.push(RouteEntry {
                component: component.to_string(),
                raw_route: raw_route.to_string(),
                based_route,
                wildcard,
            });
        }
        Ok(Router {
            inner: Arc::new(Inner { finder, entries }),
        })
    }

    /// Finds the component for a request path (without the query string).
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let mut found = self.inner.finder.match_iter(path);
        found.find_map(|found| self.accept(&found, path))
    }

    /// Every route matching a request path, best first: [`Router::route`]
    /// takes the first.
    pub fn matches<'a>(&'a self, path: &'a str) -> impl Iterator<Item = RouteMatch<'a>> + 'a {
        let found = self.inner.finder.match_iter(path);
        found.filter_map(move |found| self.accept(&found, path))
    }

    /// A match of `routefinder`'s, if Spin's rules accept it too.
    fn accept(
        &self,
        found: &routefinder::Match<'_, '_, usize>,
        path: &str,
    ) -> Option<RouteMatch<'_>> {
        let entry = self.inner.entries.get(*found.handler())?;
        let captures = found.captures();
        let wildcard = captures.wildcard().unwrap_or("");
        // routefinder 0.6 lets `/foo/*` match `/foobar`; Spin's `/foo/...`
        // means "`/foo` and below", so demand a `/` before the captured tail.
        if !wildcard.is_empty() && !preceded_by_slash(path, wildcard) {
            return None;
        }
        let path_info = if entry.wildcard {
            spin_path_info(wildcard, path.ends_with('/'))
        } else {
            String::new()
        };
        Some(RouteMatch {
            entry,
            named: captures
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            path_info,
        })
    }

    /// `(based route, component id)` for every route, in manifest order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .entries
            .iter()
            .map(|e| (e.based_route.as_str(), e.component.as_str()))
    }
}

impl RouteMatch<'_> {
    /// The component that handles the request.
    pub fn component_id(&self) -> &str {
        &self.entry.component
    }

    /// The matched route with the base applied, e.g. `/api/foo/...`
    /// (the `spin-matched-route` header). The root route is `/`.
    pub fn based_route(&self) -> &str {
        &self.entry.based_route
    }

    /// The matched route as written in the manifest, e.g. `/foo/...`
    /// (the `spin-raw-component-route` header).
    pub fn raw_route(&self) -> &str {
        &self.entry.raw_route
    }

    /// The raw route without a trailing `/...`, e.g. `/foo`; `""` for `/...`
    /// (the `spin-component-route` header).
    pub fn component_route(&self) -> String {
        let raw = &self.entry.raw_route;
        raw.strip_suffix("/...").unwrap_or(raw).to_string()
    }

    /// The part of the path matched by a trailing `/...` (the `spin-path-info`
    /// header): for route `/foo/...`, `/foo` gives `""`, `/foo/` gives `"/"`,
    /// `/foo/bar` gives `"/bar"` and `/foo/bar/` gives `"/bar/"`. Always `""`
    /// for routes without a wildcard.
    pub fn path_info(&self) -> String {
        self.path_info.clone()
    }

    /// `:name` captures in route order (`spin-path-match-<name>` headers).
    pub fn named(&self) -> Vec<(String, String)> {
        self.named.clone()
    }
}

/// Checks a route as written in a manifest: it starts with `/`; `...` appears
/// only as the last segment; `:name` segments have a name of letters, digits,
/// `_` or `-` (it becomes part of a header name) and names are unique; no empty
/// segments and no `*` (use `/...`). One trailing slash is tolerated.
pub fn check_route(route: &str) -> Result<(), String> {
    let Some(rest) = route.strip_prefix('/') else {
        return Err(format!("route {route:?} must start with `/`"));
    };
    if rest.is_empty() {
        return Ok(());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    let mut names: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if segment.is_empty() {
            return Err(format!("route {route:?} has an empty segment (`//`)"));
        }
        if *segment == "..." {
            if last {
                continue;
            }
            return Err(format!(
                "route {route:?} has `...` before its last segment; the wildcard `/...` may only end a route"
            ));
        }
        if *segment == "." || *segment == ".." {
            return Err(format!("route {route:?} has a `{segment}` segment"));
        }
        if segment.contains('*') {
            return Err(format!(
                "route {route:?} contains `*`; use a trailing `/...` for a wildcard"
            ));
        }
        if let Some(name) = segment.strip_prefix(':') {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "route {route:?} has malformed segment `{segment}`; expected `:` and a name of letters, digits, `_` or `-`, e.g. `:id`"
                ));
            }
            if names.contains(&name) {
                return Err(format!("route {route:?} uses `:{name}` twice"));
            }
            names.push(name);
        } else if segment.contains(".:") {
            return Err(format!(
                "route {route:?} has malformed segment `{segment}`; a `:name` capture must be a whole segment"
            ));
        }
    }
    Ok(())
}

/// Prepends the base: `("/api", "/foo/...")` gives `/api/foo/...`; a trailing
/// slash on either is dropped; the root of the root is `/`.
fn join_base(base: &str, route: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = if base.is_empty() || base.starts_with('/') {
        base.to_string()
    } else {
        format!("/{base}")
    };
    let route = if route.len() > 1 {
        route.strip_suffix('/').unwrap_or(route)
    } else {
        ""
    };
    let joined = format!("{base}{route}");
    if joined.is_empty() {
        "/".to_string()
    } else {
        joined
    }
}

/// A key equal for two routes (as written, no base) exactly when
/// [`Router::build`] would reject them as duplicates.
pub(crate) fn route_key(route: &str) -> String {
    duplicate_key(&join_base("/", route))
}

/// Two routes collide when they match the same paths: `:id` and `:user_id` in
/// the same position do.
fn duplicate_key(based_route: &str) -> String {
    based_route
        .split('/')
        .map(|segment| {
            if segment.starts_with(':') {
                ":"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// routefinder requires a wildcard to be last and a param to be followed by a
/// slash, a dot or nothing (it panics otherwise).
fn is_well_formed(spec: &RouteSpec) -> bool {
    let segments = spec.segments();
    segments.iter().enumerate().all(|(i, segment)| {
        let next = segments.get(i + 1);
        match segment {
            Segment::Wildcard => next.is_none(),
            Segment::Param(_) => matches!(next, None | Some(Segment::Slash | Segment::Dot)),
            _ => true,
        }
    })
}

/// The wildcard capture is a suffix of the path (less trailing slashes); the
/// character before it must be a `/` for it to be a segment boundary.
fn preceded_by_slash(path: &str, wildcard: &str) -> bool {
    path.trim_end_matches('/')
        .strip_suffix(wildcard)
        .is_some_and(|prefix| prefix.ends_with('/'))
}

/// Spin's traditional `spin-path-info`: routefinder drops trailing slashes
/// from the capture, Spin keeps one.
fn spin_path_info(wildcard: &str, trailing_slash: bool) -> String {
    match (wildcard.is_empty(), trailing_slash) {
        (true, false) => String::new(),
        (true, true) => "/".to_string(),
        (false, false) => format!("/{wildcard}"),
        (false, true) => format!("/{wildcard}/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (request path, component or "" for no match, path_info, `name=value` captures).
    type Row = (&'static str, &'static str, &'static str, &'static str);

    fn check_table(router: &Router, rows: &[Row]) {
        for &(path, component, path_info, named) in rows {
            let actual = router.route(path).map(|m| {
                let named: Vec<String> =
                    m.named().iter().map(|(k, v)| format!("{k}={v}")).collect();
                (m.component_id().to_string(), m.path_info(), named.join(" "))
            });
            let expected = (!component.is_empty()).then(|| {
                (
                    component.to_string(),
                    path_info.to_string(),
                    named.to_string(),
                )
            });
            assert_eq!(actual, expected, "path {path:?}");
        }
    }

    #[test]
    fn precedence_table() {
        let routes = [
            ("root", "/"),
            ("users", "/users"),
            ("user", "/users/:id"),
            ("user-post", "/users/:id/posts/:post"),
            ("me", "/users/me"),
            ("static", "/static/..."),
            ("images", "/static/img/..."),
            ("files-exact", "/files"),
            ("files", "/files/..."),
        ];
        #[rustfmt::skip]
        check_table(&Router::build("/", routes).unwrap(), &[
            ("/",                    "root",        "",              ""),
            ("/users",               "users",       "",              ""),
            ("/users/",              "users",       "",              ""), // trailing slash ignored
            ("/users/42",            "user",        "",              "id=42"),
            ("/users/42/",           "user",        "",              "id=42"),
            ("/users/me",            "me",          "",              ""), // exact beats :id
            ("/users/42/posts/7",    "user-post",   "",              "id=42 post=7"),
            ("/users/42/posts",      "",            "",              ""),
            ("/users/42/x/7",        "",            "",              ""),
            ("/Users",               "",            "",              ""), // case-sensitive
            ("/static",              "static",      "",              ""),
            ("/static/",             "static",      "/",             ""),
            ("/static/css/site.css", "static",      "/css/site.css", ""),
            ("/static/css/",         "static",      "/css/",         ""),
            ("/static/img",          "images",      "",              ""), // longest prefix
            ("/static/img/logo.png", "images",      "/logo.png",     ""),
            ("/staticx",             "",            "",              ""), // not a segment boundary
            ("/static-files/a",      "",            "",              ""),
            ("/files",               "files-exact", "",              ""), // exact beats wildcard
            ("/files/",              "files-exact", "",              ""),
            ("/files/a/b/",          "files",       "/a/b/",         ""),
            ("/nope",                "",            "",              ""),
        ]);

        let based = [
            ("all", "/..."),
            ("health", "/health"),
            ("v1", "/v1/:ver/..."),
        ];
        #[rustfmt::skip]
        check_table(&Router::build("/api/", based).unwrap(), &[
            ("/api",             "all",    "",        ""),
            ("/api/",            "all",    "/",       ""),
            ("/api/health",      "health", "",        ""),
            ("/api/x/y",         "all",    "/x/y",    ""),
            ("/api/v1/7/things", "v1",     "/things", "ver=7"),
            ("/api/v1/7",        "v1",     "",        "ver=7"),
            ("/apix",            "",       "",        ""),
            ("/health",          "",       "",        ""),
            ("/",                "",       "",        ""),
        ]);

        #[rustfmt::skip]
        check_table(&Router::build("/", [("all", "/...")]).unwrap(), &[
            ("/",     "all", "/",     ""),
            ("/a/b",  "all", "/a/b",  ""),
            ("/a/b/", "all", "/a/b/", ""),
        ]);
    }

    #[test]
    fn match_reports_routes_for_headers() {
        let router = Router::build("/api", [("a", "/foo/..."), ("b", "/"), ("c", "/bar")]).unwrap();
        let m = router.route("/api/foo/x").unwrap();
        assert_eq!(m.based_route(), "/api/foo/...");
        assert_eq!(m.raw_route(), "/foo/...");
        assert_eq!(m.component_route(), "/foo");
        let root = router.route("/api").unwrap();
        assert_eq!(
            (root.component_id(), root.based_route(), root.raw_route()),
            ("b", "/api", "/")
        );
        let routes: Vec<_> = router.routes().collect();
        assert_eq!(
            routes,
            [("/api/foo/...", "a"), ("/api", "b"), ("/api/bar", "c")]
        );

        let plain = Router::build("/", [("r", "/"), ("all", "/...")]).unwrap();
        assert_eq!(plain.route("/").unwrap().based_route(), "/");
        let all = plain.route("/x").unwrap();
        assert_eq!(
            (all.based_route(), all.component_route()),
            ("/...", String::new())
        );
    }

    #[test]
    fn duplicate_routes_name_both_components() {
        for (first, second) in [
            ("/a", "/a"),
            ("/a", "/a/"),
            ("/u/:id", "/u/:uid"),
            ("/...", "/..."),
        ] {
            let err = Router::build("/", [("one", first), ("two", second)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("`one`") && err.contains("`two`"), "{err}");
        }
        // Same prefix, different shapes are not duplicates.
        assert!(Router::build("/", [("a", "/a"), ("b", "/a/..."), ("c", "/:x")]).is_ok());
    }

    #[test]
    fn malformed_routes_are_rejected() {
        for (route, why) in [
            ("foo", "must start with `/`"),
            ("/.../x", "`...` before its last segment"),
            ("/a//b", "empty segment"),
            ("/:", "malformed segment `:`"),
            ("/:a.b", "malformed segment `:a.b`"),
            ("/x.:ext", "malformed segment"),
            ("/:id/:id", "`:id` twice"),
            ("/a/*", "contains `*`"),
            ("/a/../b", "`..` segment"),
        ] {
            let err = check_route(route).unwrap_err();
            assert!(err.contains(why), "{route}: {err}");
            assert!(Router::build("/", [("c", route)]).is_err(), "{route}");
        }
        for ok in ["/", "/a/", "/a.json", "/v1/models/m:predict", "/:id-x/..."] {
            assert_eq!(check_route(ok), Ok(()), "{ok}");
        }
    }
}
