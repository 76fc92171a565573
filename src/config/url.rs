//! Backend server URLs: `ws://host[:port][/path]`.
//!
//! Exists so that the upstream connector gets the host to resolve, the port,
//! the path to request and the `Host` header value already split and checked,
//! and never has to parse a URL at connect time. No URL crate is needed for
//! this small grammar.

use std::net::Ipv6Addr;

use super::BackendUrl;

/// The port used when a `ws://` URL names none.
pub const DEFAULT_WS_PORT: u16 = 80;

impl BackendUrl {
    /// Parses a backend URL as written in `servers[i].url`.
    ///
    /// Only `ws://` is accepted for now (`wss://` is refused with "wss
    /// backends are not supported yet"). No userinfo, query or fragment. An
    /// IPv6 address is written in brackets (`ws://[::1]:9001`). The error is a
    /// sentence for the operator.
    pub fn parse(text: &str) -> Result<BackendUrl, String> {
        if text.is_empty() {
            return Err("empty URL: expected e.g. ws://127.0.0.1:9001".into());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{text:?}: a URL contains no spaces or control characters"
            ));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "{text:?}: expected a URL such as ws://127.0.0.1:9001"
            ));
        };
        if scheme.eq_ignore_ascii_case("wss") {
            return Err(format!(
                "{text:?}: wss backends are not supported yet (use ws://)"
            ));
        }
        if !scheme.eq_ignore_ascii_case("ws") {
            return Err(format!(
                "{text:?}: unsupported scheme {scheme:?}: backends are WebSocket servers, written ws://HOST:PORT"
            ));
        }
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if tail.contains('?') {
            return Err(format!("{text:?}: a backend URL has no query (?...)"));
        }
        if tail.contains('#') {
            return Err(format!("{text:?}: a backend URL has no fragment (#...)"));
        }
        if authority.contains('@') {
            return Err(format!(
                "{text:?}: a backend URL has no user name or password (user@)"
            ));
        }
        if authority.is_empty() {
            return Err(format!("{text:?}: the host is missing"));
        }
        let (host, port_text, bracketed) = if let Some(inner) = authority.strip_prefix('[') {
            let Some((addr, after)) = inner.split_once(']') else {
                return Err(format!("{text:?}: missing ']' after the IPv6 address"));
            };
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(format!("{text:?}: {addr:?} is not a valid IPv6 address"));
            }
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => {
                        return Err(format!(
                            "{text:?}: unexpected {after:?} after the IPv6 address"
                        ))
                    }
                },
            };
            (addr, port, true)
        } else {
            let mut parts = authority.splitn(2, ':');
            let host = parts.next().unwrap_or_default();
            let port = parts.next();
            if port.is_some_and(|p| p.contains(':')) {
                return Err(format!(
                    "{text:?}: an IPv6 address is written in brackets, e.g. ws://[::1]:9001"
                ));
            }
            check_host(text, host)?;
            (host, port, false)
        };
        let port = match port_text {
            None => DEFAULT_WS_PORT,
            Some("") => return Err(format!("{text:?}: empty port after ':'")),
            Some(p) => {
                if !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("{text:?}: port {p:?} is not a number"));
                }
                match p.parse::<u16>() {
                    Ok(0) => return Err(format!("{text:?}: port 0 is not a valid backend port")),
                    Ok(port) => port,
                    Err(_) => return Err(format!("{text:?}: port {p} is above 65535")),
                }
            }
        };
        let path = tail.trim_end_matches('/').to_owned();
        let host_header = if bracketed {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let authority = if port == DEFAULT_WS_PORT {
            host_header
        } else {
            format!("{host_header}:{port}")
        };
        Ok(BackendUrl {
            host: host.to_owned(),
            port,
            path,
            authority,
        })
    }
}

/// Checks a host name or IPv4 address: letters, digits, `-`, `_`, `.`,
/// non-empty dot-separated labels.
fn check_host(text: &str, host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err(format!("{text:?}: the host is missing"));
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{text:?}: character {bad:?} is not allowed in a host name"
        ));
    }
    if host.split('.').any(str::is_empty) {
        return Err(format!(
            "{text:?}: empty label in host {host:?} (a leading, trailing or doubled '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, path: &str, authority: &str) -> BackendUrl {
        BackendUrl {
            host: host.into(),
            port,
            path: path.into(),
            authority: authority.into(),
        }
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(
            BackendUrl::parse("ws://127.0.0.1:9001"),
            Ok(url("127.0.0.1", 9001, "", "127.0.0.1:9001"))
        );
        assert_eq!(
            BackendUrl::parse("ws://echo.internal"),
            Ok(url("echo.internal", 80, "", "echo.internal"))
        );
        assert_eq!(
            BackendUrl::parse("WS://Chat.Internal:80/"),
            Ok(url("Chat.Internal", 80, "", "Chat.Internal"))
        );
        assert_eq!(
            BackendUrl::parse("ws://[::1]:9001/a/b/"),
            Ok(url("::1", 9001, "/a/b", "[::1]:9001"))
        );
        assert_eq!(
            BackendUrl::parse("ws://[fe80::1]"),
            Ok(url("fe80::1", 80, "", "[fe80::1]"))
        );
        assert_eq!(
            BackendUrl::parse("ws://h:8080/socket"),
            Ok(url("h", 8080, "/socket", "h:8080"))
        );
    }

    #[test]
    fn refused_forms() {
        for (text, needle) in [
            ("", "empty URL"),
            ("wss://h:443", "wss backends are not supported yet"),
            ("http://h", "unsupported scheme \"http\""),
            ("127.0.0.1:9001", "expected a URL"),
            ("ws://", "host is missing"),
            ("ws://:9001", "host is missing"),
            ("ws://u:p@h", "user name"),
            ("ws://h/p?q=1", "no query"),
            ("ws://h?q", "no query"),
            ("ws://h/#f", "no fragment"),
            ("ws://h:", "empty port"),
            ("ws://h:0", "port 0"),
            ("ws://h:65536", "above 65535"),
            ("ws://h:x1", "not a number"),
            ("ws://h:+1", "not a number"),
            ("ws://::1:9001", "brackets"),
            ("ws://[::1", "missing ']'"),
            ("ws://[::1]x", "unexpected"),
            ("ws://[zz]:1", "not a valid IPv6"),
            ("ws://h h", "spaces"),
            ("ws://h..x", "empty label"),
            ("ws://hä", "not allowed"),
            ("ws://h:99999999999999999999999", "above 65535"),
        ] {
            let err = BackendUrl::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
