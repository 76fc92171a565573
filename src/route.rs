//! The route table: which backend serves a request, by host and path prefix.
//!
//! Matching happens before the opening handshake is checked, so that a plain
//! HTTP request on a WebSocket route can get 426 and an unknown path 404.
//!
//! Precedence, most specific first:
//! 1. routes whose `host` equals the request's host exactly,
//! 2. routes with a wildcard host (`*.example.com`), longest suffix first,
//! 3. routes without a `host`.
//!
//! Within each group the longest matching `path_prefix` wins. Prefixes match
//! whole path segments: `/chat` matches `/chat`, `/chat/room` and `/chat?x=1`
//! but not `/chatter`; a prefix ending in `/` matches everything below it.
//! The request host is compared without its port, lowercased, and without a
//! trailing dot. This module never touches a socket.

use std::collections::HashMap;

use crate::config::{Config, HostPattern, RouteConfig};

/// Routes indexed for lookup; built once from a validated [`Config`].
///
/// A lookup costs a few hash probes whatever the number of routes: one per
/// dot in the host for the wildcards, and about two per path segment in
/// each host group (see [`Prefixes`]), never a scan over all routes.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The routes themselves, in config order.
    routes: Vec<RouteConfig>,
    /// Exact host -> its routes' prefixes.
    exact: HashMap<String, Prefixes>,
    /// Wildcard suffix (with its leading dot) -> its routes' prefixes.
    wildcard: HashMap<String, Prefixes>,
    /// Prefixes of the routes without a host.
    any_host: Prefixes,
}

/// One host group's routes by path prefix.
///
/// A prefix matches a path when it is the whole path, or the path
/// continues with `/` right after it, or the prefix itself ends with `/`.
/// So the prefixes that can match a path are the path itself and, at each
/// `/` in it, the part before that slash and the part up to and including
/// it: the lookup probes those, longest first.
#[derive(Debug, Clone, Default)]
struct Prefixes(HashMap<String, usize>);

impl Prefixes {
    /// Adds route `index` under `prefix`; on a duplicate the first route in
    /// config order stays (validation rules duplicates out anyway).
    fn insert(&mut self, prefix: &str, index: usize) {
        self.0.entry(prefix.to_string()).or_insert(index);
    }

    /// The route with the longest prefix that matches `path`.
    fn longest_match(&self, path: &str) -> Option<usize> {
        if self.0.is_empty() {
            return None;
        }
        if let Some(&i) = self.0.get(path) {
            return Some(i);
        }
        path.rmatch_indices('/')
            .flat_map(|(slash, _)| [&path[..=slash], &path[..slash]])
            .find_map(|prefix| self.0.get(prefix).copied())
    }
}

impl RouteTable {
    /// Indexes the routes of `config`.
    pub fn new(config: &Config) -> Self {
        Self::from_routes(config.routes.clone())
    }

    /// Indexes a list of routes (config order decides ties, which validation
    /// already rules out).
    pub fn from_routes(routes: Vec<RouteConfig>) -> Self {
        let mut exact: HashMap<String, Prefixes> = HashMap::new();
        let mut wildcard: HashMap<String, Prefixes> = HashMap::new();
        let mut any_host = Prefixes::default();
        for (i, route) in routes.iter().enumerate() {
            let group = match &route.host {
                Some(HostPattern::Exact(h)) => exact.entry(h.clone()).or_default(),
                Some(HostPattern::Wildcard(suffix)) => wildcard.entry(suffix.clone()).or_default(),
                None => &mut any_host,
            };
            group.insert(&route.path_prefix, i);
        }
        RouteTable {
            routes,
            exact,
            wildcard,
            any_host,
        }
    }

    /// The route for a request, if any. `host` is the raw `Host` header value
    /// (port and case are normalised here); `path` is the request path
    /// without the query.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&RouteConfig> {
        let host = host.map(normalise_host);
        let found = host
            .as_deref()
            .and_then(|host| {
                let exact = self.exact.get(host).and_then(|p| p.longest_match(path));
                // Wildcard suffixes start at a dot after the first label,
                // longest (leftmost dot) first.
                exact.or_else(|| {
                    host.match_indices('.')
                        .filter(|&(dot, _)| dot > 0)
                        .filter_map(|(dot, _)| self.wildcard.get(&host[dot..]))
                        .find_map(|p| p.longest_match(path))
                })
            })
            .or_else(|| self.any_host.longest_match(path));
        found.map(|i| &self.routes[i])
    }

    /// All routes, in config order.
    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }
}

/// Lowercases a `Host` header value and strips its port and a trailing dot.
fn normalise_host(raw: &str) -> String {
    let raw = raw.trim();
    let without_port = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: keep what is inside the brackets.
        rest.split(']').next().unwrap_or(rest)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Path to send to the backend for a request path, per the route's
/// `strip_prefix` rule: with it, the matched prefix is removed (keeping a
/// leading `/`); the server URL's own path is then put in front.
pub fn upstream_path(route: &RouteConfig, server_path: &str, path: &str) -> String {
    let rest = if route.strip_prefix {
        let stripped = &path[route.path_prefix.len().min(path.len())..];
        if stripped.starts_with('/') {
            stripped.to_string()
        } else {
            format!("/{stripped}")
        }
    } else {
        path.to_string()
    };
    if server_path.is_empty() {
        rest
    } else if rest == "/" {
        server_path.to_string()
    } else {
        format!("{server_path}{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RelayMode;

    fn route(host: Option<HostPattern>, prefix: &str, backend: usize) -> RouteConfig {
        RouteConfig {
            host,
            path_prefix: prefix.to_string(),
            backend,
            backend_name: format!("b{backend}"),
            mode: RelayMode::Frames,
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
            strip_prefix: false,
        }
    }

    fn table() -> RouteTable {
        RouteTable::from_routes(vec![
            route(None, "/", 0),
            route(None, "/chat", 1),
            route(None, "/chat/admin", 2),
            route(
                Some(HostPattern::Exact("api.example.com".into())),
                "/chat",
                3,
            ),
            route(Some(HostPattern::Wildcard(".example.com".into())), "/", 4),
            route(
                Some(HostPattern::Wildcard(".eu.example.com".into())),
                "/",
                5,
            ),
        ])
    }

    fn backend(t: &RouteTable, host: Option<&str>, path: &str) -> Option<usize> {
        t.lookup(host, path).map(|r| r.backend)
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table();
        assert_eq!(backend(&t, None, "/chat"), Some(1));
        assert_eq!(backend(&t, None, "/chat/room"), Some(1));
        assert_eq!(backend(&t, None, "/chat/admin/x"), Some(2));
        assert_eq!(backend(&t, None, "/chatter"), Some(0));
        assert_eq!(backend(&t, Some("other.org"), "/x"), Some(0));
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let t = table();
        assert_eq!(backend(&t, Some("API.example.com:8443"), "/chat"), Some(3));
        // exact host has no route for this path: the wildcard takes it
        assert_eq!(backend(&t, Some("api.example.com"), "/other"), Some(4));
        assert_eq!(backend(&t, Some("x.eu.example.com"), "/"), Some(5));
        assert_eq!(backend(&t, Some("x.example.com."), "/"), Some(4));
        // the bare suffix is not matched by the wildcard
        assert_eq!(backend(&t, Some("example.com"), "/chat"), Some(1));
    }

    #[test]
    fn no_route() {
        let t = RouteTable::from_routes(vec![route(None, "/echo", 0)]);
        assert_eq!(backend(&t, Some("h"), "/"), None);
        assert_eq!(backend(&t, Some("h"), "/echoes"), None);
        assert_eq!(backend(&t, Some("[::1]:80"), "/echo"), Some(0));
    }

    /// The matching rule of the module doc, checked one prefix at a time:
    /// the reference that [`Prefixes::longest_match`] must agree with.
    fn prefix_matches(prefix: &str, path: &str) -> bool {
        if !path.starts_with(prefix) {
            return false;
        }
        prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
    }

    #[test]
    fn indexed_lookup_agrees_with_the_rule_prefix_by_prefix() {
        let prefixes = [
            "/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/a//", "/b", "/a/b/",
        ];
        let paths = [
            "/", "/a", "/a/", "/a/b", "/a/bc", "/ab", "/abc", "/a/b/c/d", "/a//x", "//", "/b/a",
            "/a/b/", "/c",
        ];
        // The full set, and each set with one prefix left out.
        for skip in 0..=prefixes.len() {
            let set: Vec<&str> = (0..prefixes.len())
                .filter(|&i| i != skip)
                .map(|i| prefixes[i])
                .collect();
            let mut index = Prefixes::default();
            for (i, p) in set.iter().enumerate() {
                index.insert(p, i);
            }
            for path in paths {
                let expected = set
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| prefix_matches(p, path))
                    .max_by_key(|(_, p)| p.len())
                    .map(|(i, _)| i);
                assert_eq!(
                    index.longest_match(path),
                    expected,
                    "path {path:?} with prefixes {set:?}"
                );
            }
        }
    }

    #[test]
    fn upstream_path_rules() {
        let mut r = route(None, "/echo", 0);
        assert_eq!(upstream_path(&r, "", "/echo/a"), "/echo/a");
        assert_eq!(upstream_path(&r, "/base", "/echo/a"), "/base/echo/a");
        r.strip_prefix = true;
        assert_eq!(upstream_path(&r, "", "/echo/a"), "/a");
        assert_eq!(upstream_path(&r, "", "/echo"), "/");
        assert_eq!(upstream_path(&r, "/base", "/echo"), "/base");
        assert_eq!(upstream_path(&r, "/base", "/echo/a"), "/base/a");
    }
}
