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
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The routes themselves, in config order.
    routes: Vec<RouteConfig>,
    /// Exact host -> route indices, longest prefix first.
    exact: HashMap<String, Vec<usize>>,
    /// (suffix with leading dot, route indices longest prefix first), longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    /// Routes without a host, longest prefix first.
    any_host: Vec<usize>,
}

impl RouteTable {
    /// Indexes the routes of `config`.
    pub fn new(config: &Config) -> Self {
        Self::from_routes(config.routes.clone())
    }

    /// Indexes a list of routes (config order decides ties, which validation
    /// already rules out).
    pub fn from_routes(routes: Vec<RouteConfig>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: Vec<(String, Vec<usize>)> = Vec::new();
        let mut any_host = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            match &route.host {
                Some(HostPattern::Exact(h)) => exact.entry(h.clone()).or_default().push(i),
                Some(HostPattern::Wildcard(suffix)) => {
                    match wildcard.iter_mut().find(|(s, _)| s == suffix) {
                        Some((_, list)) => list.push(i),
                        None => wildcard.push((suffix.clone(), vec![i])),
                    }
                }
                None => any_host.push(i),
            }
        }
        let by_prefix_len = |list: &mut Vec<usize>| {
            list.sort_by_key(|&i| std::cmp::Reverse(routes[i].path_prefix.len()))
        };
        exact.values_mut().for_each(by_prefix_len);
        wildcard.iter_mut().for_each(|(_, l)| by_prefix_len(l));
        wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        by_prefix_len(&mut any_host);
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
        let first_match = |list: &[usize]| {
            list.iter()
                .map(|&i| &self.routes[i])
                .find(|r| prefix_matches(&r.path_prefix, path))
        };
        if let Some(host) = host.as_deref() {
            if let Some(route) = self.exact.get(host).and_then(|l| first_match(l)) {
                return Some(route);
            }
            for (suffix, list) in &self.wildcard {
                if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                    if let Some(route) = first_match(list) {
                        return Some(route);
                    }
                }
            }
        }
        first_match(&self.any_host)
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

/// Segment-aware prefix match (see the module doc).
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
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
