//! Host patterns of routes: `example.com` or `*.example.com`.
//!
//! Exists so that the route table gets a pattern that is already checked and
//! lowercased, and so that "what does `*.example.com` match" is decided in one
//! place: any deeper name (`a.example.com`, `a.b.example.com`), never the bare
//! `example.com`.

use std::fmt;
use std::net::Ipv6Addr;

use super::HostPattern;

impl HostPattern {
    /// Parses a pattern as written in a route's `host`.
    ///
    /// Accepts a hostname or IPv4 address, an IPv6 address in brackets
    /// (`[::1]`), or `*.` followed by a hostname. Refuses a scheme, a port, a
    /// path, empty labels and any other use of `*`. The result is lowercase.
    /// The error is a sentence for the operator.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        if text.is_empty() {
            return Err("empty host pattern: remove `host` to match any host".into());
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: a host pattern has no scheme: write \"example.com\", not \"https://example.com\""
            ));
        }
        if text.contains('/') {
            return Err(format!("{text:?}: a host pattern has no path"));
        }
        let lower = text.to_ascii_lowercase();
        if let Some(suffix) = lower.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(format!(
                    "{text:?}: only one leading \"*.\" is allowed, e.g. \"*.example.com\""
                ));
            }
            check_hostname(text, suffix)?;
            return Ok(HostPattern::Wildcard(format!(".{suffix}")));
        }
        if lower.contains('*') {
            return Err(format!(
                "{text:?}: a wildcard is allowed only as a whole leading label, e.g. \"*.example.com\""
            ));
        }
        if let Some(inner) = lower.strip_prefix('[') {
            let Some(addr) = inner.strip_suffix(']') else {
                return Err(format!(
                    "{text:?}: an IPv6 address is written in brackets without a port, e.g. \"[::1]\""
                ));
            };
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(format!("{text:?}: not a valid IPv6 address"));
            }
            return Ok(HostPattern::Exact(lower));
        }
        if lower.contains(':') {
            return Err(format!(
                "{text:?}: a host pattern has no port (the port of the Host header is ignored when routing); IPv6 addresses go in brackets"
            ));
        }
        check_hostname(text, &lower)?;
        Ok(HostPattern::Exact(lower))
    }

    /// Whether a request host (lowercase or not, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => host.eq_ignore_ascii_case(exact),
            HostPattern::Wildcard(suffix) => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl fmt::Display for HostPattern {
    /// Writes the pattern as it would be written in the config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Checks DNS-like syntax: dot-separated labels of letters, digits, `-` and
/// `_`, none empty, none longer than 63, not starting or ending with `-`.
fn check_hostname(text: &str, name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("{text:?}: a host name is at most 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!(
                "{text:?}: empty label (a leading, trailing or doubled '.')"
            ));
        }
        if label.len() > 63 {
            return Err(format!(
                "{text:?}: label {label:?} is longer than 63 characters"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{text:?}: character {bad:?} is not allowed in a host name (letters, digits, '-', '_' and '.')"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{text:?}: label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        assert_eq!(
            HostPattern::parse("Example.COM"),
            Ok(HostPattern::Exact("example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*.Example.com"),
            Ok(HostPattern::Wildcard(".example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("10.0.0.1"),
            Ok(HostPattern::Exact("10.0.0.1".into()))
        );
        assert_eq!(
            HostPattern::parse("[::1]"),
            Ok(HostPattern::Exact("[::1]".into()))
        );
        assert_eq!(HostPattern::parse("*.a.b").unwrap().to_string(), "*.a.b");
    }

    #[test]
    fn refuses_bad_syntax() {
        for (text, needle) in [
            ("", "empty"),
            ("https://example.com", "no scheme"),
            ("example.com:8080", "no port"),
            ("[::1]:80", "brackets"),
            ("[zz]", "IPv6"),
            ("*.*.example.com", "only one leading"),
            ("a.*.example.com", "whole leading label"),
            ("*example.com", "whole leading label"),
            ("*.", "empty label"),
            ("*", "whole leading label"),
            ("example.com.", "empty label"),
            ("exa mple.com", "not allowed"),
            ("exämple.com", "not allowed"),
            ("-a.com", "starts or ends"),
            ("example.com/x", "no path"),
        ] {
            let err = HostPattern::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        assert!(HostPattern::parse(&"a".repeat(64)).is_err());
        assert!(HostPattern::parse(&"a.".repeat(130)).is_err());
    }

    #[test]
    fn matching() {
        let w = HostPattern::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(w.matches("A.B.Example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("badexample.com"));
        assert!(!w.matches(".example.com"));
        assert!(!w.matches("ä"));
        let e = HostPattern::parse("example.com").unwrap();
        assert!(e.matches("EXAMPLE.com"));
        assert!(!e.matches("a.example.com"));
    }
}
