//! Where the load goes and where it comes from: the target URL, its address,
//! the TLS client configuration for `wss://`, and the source addresses.
//!
//! Everything here is worked out once before the first connection, so a
//! connection attempt only binds, connects and writes a request that is
//! already formatted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::error::BenchError;
use crate::config::addresses::parse_address_range;

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Whether the scheme is `wss`.
    pub tls: bool,
    /// The host as written, without brackets for IPv6.
    pub host: String,
    /// The port, explicit or the scheme's default (80 or 443).
    pub port: u16,
    /// The request target: path and query, at least `/`.
    pub path: String,
    /// The `Host` header value: the host, and the port if not the default.
    pub authority: String,
}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH][?QUERY]` or the same with `wss://`.
    /// A fragment is dropped; user info is refused.
    pub fn parse(url: &str) -> Result<Target, BenchError> {
        let err = |reason: &str| BenchError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("a URL contains no spaces or control characters"));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("expected a URL such as ws://127.0.0.1:9001/"))?;
        let tls = if scheme.eq_ignore_ascii_case("ws") {
            false
        } else if scheme.eq_ignore_ascii_case("wss") {
            true
        } else {
            return Err(err("the scheme must be ws:// or wss://"));
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if authority.contains('@') {
            return Err(err("user names and passwords (user@) are not supported"));
        }
        if authority.is_empty() {
            return Err(err("the host is missing"));
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (addr, after) = inner
                .split_once(']')
                .ok_or_else(|| err("missing ']' after the IPv6 address"))?;
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(err("not a valid IPv6 address in brackets"));
            }
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| err("unexpected text after the IPv6 address"))?,
                ),
            };
            (addr, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("the host is missing"));
        }
        let default_port = if tls { 443 } else { 80 };
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| err("the port must be a number from 1 to 65535"))?,
        };
        let path = match tail {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let authority = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(Target {
            tls,
            host: host.to_owned(),
            port,
            path,
            authority,
        })
    }

    /// Resolves the host to one socket address (the first the resolver
    /// gives, so `localhost` may be `127.0.0.1` or `::1`).
    pub fn resolve(&self) -> Result<SocketAddr, BenchError> {
        use std::net::ToSocketAddrs;
        let resolve_err = |source| BenchError::Resolve {
            host: self.host.clone(),
            source,
        };
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(resolve_err)?
            .next()
            .ok_or_else(|| {
                resolve_err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no address",
                ))
            })
    }

    /// The opening handshake request, with `{key}` left for the caller:
    /// returned as the text before and after the key.
    pub(crate) fn request_parts(&self) -> (String, String) {
        (
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nUser-Agent: wsgate-bench\r\nSec-WebSocket-Key: ",
                self.path, self.authority
            ),
            "\r\n\r\n".to_owned(),
        )
    }

    /// The name the server's certificate is checked against.
    pub(crate) fn server_name(&self) -> Result<ServerName<'static>, BenchError> {
        ServerName::try_from(self.host.clone()).map_err(|_| BenchError::Url {
            url: self.host.clone(),
            reason: "not a valid TLS server name".to_owned(),
        })
    }
}

/// Where the CA bundle of the system usually is, tried in order when
/// neither `--ca` nor `--insecure` is given (after `SSL_CERT_FILE`).
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The rustls client configuration for `wss://` targets: ring, ALPN
/// `http/1.1`, and trust in `ca` (a PEM file), or in any certificate with
/// `insecure`, or else in the system's CA bundle.
pub fn tls_config(
    target: &Target,
    ca: Option<&Path>,
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, BenchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let file = match ca {
            Some(path) => Some(path.to_path_buf()),
            None => std::env::var_os("SSL_CERT_FILE")
                .map(Into::into)
                .or_else(|| {
                    SYSTEM_CA_FILES
                        .iter()
                        .map(Path::new)
                        .find(|p| p.is_file())
                        .map(Path::to_path_buf)
                }),
        };
        let Some(file) = file else {
            return Err(BenchError::NoTrustAnchors {
                host: target.host.clone(),
            });
        };
        let ca_err = |reason: String| BenchError::Ca {
            path: file.clone(),
            reason,
        };
        let bytes = std::fs::read(&file).map_err(|e| ca_err(e.to_string()))?;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| ca_err(format!("bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ca_err(format!("unusable certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ca_err("no CERTIFICATE block in the file".to_owned()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate verifier of `--insecure`: any certificate for any name
/// is accepted, but the handshake signatures are still checked, so the
/// TLS work done is the same as with verification.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The most source addresses `--source-ips` may name (all of 127.0.0.0/8
/// but the network and broadcast addresses).
pub const MAX_SOURCE_IPS: u32 = (1 << 24) - 2;

/// Reads `--source-ips`: a range `FIRST-LAST` of IPv4 addresses (both
/// included), a single address, or a count `N` meaning `N` addresses from
/// `127.0.0.1` upwards in 127.0.0.0/8. Connection `i` binds to address
/// `i % len` before it connects.
pub fn parse_source_ips(text: &str) -> Result<Vec<IpAddr>, BenchError> {
    let err = |reason: String| BenchError::SourceIps {
        text: text.to_owned(),
        reason,
    };
    let text = text.trim();
    let Ok(count) = text.parse::<u32>() else {
        return parse_address_range(text, MAX_SOURCE_IPS).map_err(|reason| {
            err(format!(
                "{reason}; or give a count of addresses from 127.0.0.1"
            ))
        });
    };
    if count == 0 || count > MAX_SOURCE_IPS {
        return Err(err(format!(
            "a count must be from 1 to {MAX_SOURCE_IPS} (addresses in 127.0.0.0/8)"
        )));
    }
    let first = u32::from(Ipv4Addr::new(127, 0, 0, 1));
    Ok((first..first + count)
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("ws://127.0.0.1:9001/echo?x=1").unwrap();
        assert!(!t.tls);
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 9001);
        assert_eq!(t.path, "/echo?x=1");
        assert_eq!(t.authority, "127.0.0.1:9001");

        let t = Target::parse("wss://example.com").unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 443);
        assert_eq!(t.path, "/");
        assert_eq!(t.authority, "example.com");

        let t = Target::parse("WS://[::1]:80?q#frag").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 80);
        assert_eq!(t.path, "/?q");
        assert_eq!(t.authority, "[::1]");

        for bad in [
            "http://x/",
            "ws://",
            "ws://:80/",
            "ws://h:0/",
            "ws://h:99999/",
            "ws://u@h/",
            "ws://[::1/",
            "ws://[nope]/",
            "ws://h /",
            "127.0.0.1:80",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request() {
        let t = Target::parse("ws://localhost:9/a").unwrap();
        let (head, tail) = t.request_parts();
        assert!(head.starts_with("GET /a HTTP/1.1\r\nHost: localhost:9\r\n"));
        assert!(head.ends_with("Sec-WebSocket-Key: "));
        assert_eq!(tail, "\r\n\r\n");
    }

    #[test]
    fn source_ips() {
        let ips = parse_source_ips("127.0.0.1-127.0.0.3").unwrap();
        assert_eq!(
            ips,
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
                .map(|s| s.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        let ips = parse_source_ips("300").unwrap();
        assert_eq!(ips.len(), 300);
        assert_eq!(ips[0], "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ips[299], "127.0.1.44".parse::<IpAddr>().unwrap());
        assert_eq!(parse_source_ips("::1").unwrap().len(), 1);
        for bad in ["0", "127.0.0.5-127.0.0.1", "a-b", "x", "16777215"] {
            assert!(parse_source_ips(bad).is_err(), "{bad}");
        }
    }
}
