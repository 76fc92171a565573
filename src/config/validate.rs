//! From raw YAML structs to the typed [`Config`], checking everything first.
//!
//! Exists so that all the rules of the config live in one walk over the
//! file, in file order, and every refusal names the field path and line. The
//! first error wins. Structural checks run over the whole file before any TLS
//! file is read, so a config with a typo is reported as such even on a machine
//! without its certificates.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::addresses::parse_address_range;
use super::error::{ConfigError, Position};
use super::file::{Count, RawConfig, RawMode, Scalar};
use super::positions::{FieldPath, PositionIndex};
use super::tls::{self, Which};
use super::units::{parse_duration, parse_size};
use super::{
    BackendConfig, BackendUrl, Config, HostPattern, Limits, ListenerConfig, RelayMode, RouteConfig,
    ServerConfig, Timeouts, TlsConfig, DEFAULT_BACKEND_HANDSHAKE_TIMEOUT,
    DEFAULT_CLIENT_HANDSHAKE_TIMEOUT, DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DNS_REFRESH, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RETRIES, MAX_RETRIES, MAX_SOURCE_ADDRESSES,
};

/// Parses, indexes and validates a config text.
pub(crate) fn load_text(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_yaml::from_str(text)
        .map_err(|e| parse_error(&e, text, origin, &PositionIndex::build(text)))?;
    let cx = Ctx {
        origin,
        index: PositionIndex::build(text),
        base_dir,
    };
    validate(raw, &cx)
}

/// Turns a serde_yaml error into `origin:line:col: message`.
fn parse_error(
    err: &serde_yaml::Error,
    text: &str,
    origin: &str,
    index: &PositionIndex,
) -> ConfigError {
    let location = err.location();
    let mut position = location.as_ref().map(|l| Position {
        line: l.line(),
        column: l.column(),
    });
    let mut message = err.to_string();
    if let Some(loc) = &location {
        // serde_yaml appends the position to its message; it goes in front.
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        message = message.replacen(&suffix, "", 1);
    }
    // serde_yaml places these at the start of the mapping; point at the key.
    if message.contains("duplicate field `") || message.contains("is defined twice") {
        if let Some((_, pos)) = index.first_duplicate() {
            position = Some(pos);
        }
    }
    if message.contains("more than one document") {
        position = second_document(text).or(position);
        message =
            "the file holds more than one YAML document (a second `---`): one config per file"
                .to_owned();
    }
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        message =
            "the file has no settings: expected a mapping with listeners, routes and backends"
                .to_owned();
    }
    ConfigError::Parse {
        origin: origin.to_owned(),
        position,
        message,
    }
}

/// Position of the `---` that starts a second document, if any.
fn second_document(text: &str) -> Option<Position> {
    let mut content = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("---") && content {
            return Some(Position {
                line: n + 1,
                column: 1,
            });
        }
        let trimmed = line.trim();
        if !(trimmed.is_empty()
            || trimmed.starts_with('#')
            || line.starts_with('%')
            || line.starts_with("---"))
        {
            content = true;
        }
    }
    None
}

/// What validation needs besides the raw structs.
struct Ctx<'a> {
    origin: &'a str,
    index: PositionIndex,
    base_dir: &'a Path,
}

impl Ctx<'_> {
    /// An error about the value at `path`.
    fn invalid(&self, path: &FieldPath, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            position: self.index.find(path),
            field: path.to_string(),
            message: message.into(),
        }
    }

    /// A duration field: a unit is required and zero is refused.
    fn duration(
        &self,
        path: &FieldPath,
        value: Option<&Scalar>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(Scalar(text)) = value else {
            return Ok(default);
        };
        let d = parse_duration(text).map_err(|e| self.invalid(path, e.to_string()))?;
        if d.is_zero() {
            return Err(self.invalid(path, format!("{text:?}: must be greater than 0")));
        }
        Ok(d)
    }

    /// A size field: at least one byte.
    fn size(
        &self,
        path: &FieldPath,
        value: Option<&Scalar>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        let Some(Scalar(text)) = value else {
            return Ok(default);
        };
        let n = parse_size(text).map_err(|e| self.invalid(path, e.to_string()))?;
        if n == 0 {
            return Err(self.invalid(path, format!("{text:?}: must be at least 1 byte")));
        }
        Ok(n)
    }
}

/// A TLS pair whose files are read after the structural checks.
struct PendingTls {
    listener: usize,
    cert_path: PathBuf,
    key_path: PathBuf,
}

fn validate(raw: RawConfig, cx: &Ctx<'_>) -> Result<Config, ConfigError> {
    let root = FieldPath::root();

    // Listeners.
    let lp = root.key("listeners");
    if raw.listeners.is_empty() {
        return Err(cx.invalid(&lp, "at least one listener is required"));
    }
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut pending = Vec::new();
    let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, raw_listener) in raw.listeners.iter().enumerate() {
        let p = lp.index(i);
        let bind_path = p.key("bind");
        let text = &raw_listener.bind.0;
        let bind: SocketAddr = text.trim().parse().map_err(|_| {
            cx.invalid(
                &bind_path,
                format!(
                    "invalid bind address {text:?}: expected IP:PORT such as 127.0.0.1:8080, 0.0.0.0:443 or [::]:443 (host names are not resolved)"
                ),
            )
        })?;
        // Port 0 asks the OS for a free port: several such listeners differ.
        if bind.port() != 0 {
            if let Some(first) = binds.insert(bind, i) {
                return Err(cx.invalid(
                    &bind_path,
                    format!("duplicate bind address {bind} (also listeners[{first}].bind)"),
                ));
            }
        }
        if let Some(raw_tls) = &raw_listener.tls {
            let tp = p.key("tls");
            let resolve = |field: &str, value: &str| {
                if value.trim().is_empty() {
                    Err(cx.invalid(&tp.key(field), "empty path"))
                } else {
                    Ok(cx.base_dir.join(value))
                }
            };
            let cert_path = resolve("cert", &raw_tls.cert)?;
            let key_path = resolve("key", &raw_tls.key)?;
            pending.push(PendingTls {
                listener: i,
                cert_path,
                key_path,
            });
        }
        listeners.push(ListenerConfig { bind, tls: None });
    }

    // Backends (before routes, which refer to them).
    let bp = root.key("backends");
    if raw.backends.0.is_empty() {
        return Err(cx.invalid(&bp, "at least one backend is required"));
    }
    let mut backends = Vec::with_capacity(raw.backends.0.len());
    for (name, raw_backend) in &raw.backends.0 {
        let p = bp.key(name);
        check_backend_name(name).map_err(|m| cx.invalid(&p, m))?;
        let sp = p.key("servers");
        if raw_backend.servers.is_empty() {
            return Err(cx.invalid(&sp, "at least one server is required"));
        }
        let mut servers = Vec::with_capacity(raw_backend.servers.len());
        for (j, server) in raw_backend.servers.iter().enumerate() {
            let url = BackendUrl::parse(&server.url)
                .map_err(|m| cx.invalid(&sp.index(j).key("url"), m))?;
            servers.push(ServerConfig { url });
        }
        let connect_timeout = cx.duration(
            &p.key("connect_timeout"),
            raw_backend.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        let handshake_timeout = cx.duration(
            &p.key("handshake_timeout"),
            raw_backend.handshake_timeout.as_ref(),
            DEFAULT_BACKEND_HANDSHAKE_TIMEOUT,
        )?;
        let retries = match raw_backend.retries {
            None => {
                let extra = u32::try_from(servers.len().saturating_sub(1)).unwrap_or(u32::MAX);
                extra.min(DEFAULT_MAX_RETRIES)
            }
            Some(Count(n)) => match u32::try_from(n) {
                Ok(n) if n <= MAX_RETRIES => n,
                _ => {
                    return Err(cx.invalid(
                        &p.key("retries"),
                        format!("{n} is too many: at most {MAX_RETRIES}"),
                    ))
                }
            },
        };
        let dns_refresh = cx.duration(
            &p.key("dns_refresh"),
            raw_backend.dns_refresh.as_ref(),
            DEFAULT_DNS_REFRESH,
        )?;
        let source_addresses = match &raw_backend.source_addresses {
            None => Vec::new(),
            Some(items) => source_addresses(cx, &p.key("source_addresses"), items, &servers)?,
        };
        backends.push(BackendConfig {
            name: name.clone(),
            servers,
            connect_timeout,
            handshake_timeout,
            retries,
            source_addresses,
            dns_refresh,
        });
    }

    // Routes.
    let rp = root.key("routes");
    if raw.routes.is_empty() {
        return Err(cx.invalid(&rp, "at least one route is required"));
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut seen: HashMap<(Option<String>, String), usize> = HashMap::new();
    for (i, raw_route) in raw.routes.iter().enumerate() {
        let p = rp.index(i);
        let prefix_path = p.key("path_prefix");
        check_path_prefix(&raw_route.path_prefix).map_err(|m| cx.invalid(&prefix_path, m))?;
        let backend = backends
            .iter()
            .position(|b| b.name == raw_route.backend)
            .ok_or_else(|| {
                let known: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                cx.invalid(
                    &p.key("backend"),
                    format!(
                        "unknown backend {:?} (known: {})",
                        raw_route.backend,
                        known.join(", ")
                    ),
                )
            })?;
        let host = match &raw_route.host {
            None => None,
            Some(text) => {
                Some(HostPattern::parse(text).map_err(|m| cx.invalid(&p.key("host"), m))?)
            }
        };
        let mode = match raw_route.mode {
            None | Some(RawMode::Frames) => RelayMode::Frames,
            Some(RawMode::Tunnel) => RelayMode::Tunnel,
        };
        let max_frame_size = cx.size(
            &p.key("max_frame_size"),
            raw_route.max_frame_size.as_ref(),
            DEFAULT_MAX_FRAME_SIZE,
        )?;
        let max_message_size = cx.size(
            &p.key("max_message_size"),
            raw_route.max_message_size.as_ref(),
            DEFAULT_MAX_MESSAGE_SIZE,
        )?;
        let key = (
            host.as_ref().map(ToString::to_string),
            raw_route.path_prefix.clone(),
        );
        if let Some(first) = seen.insert(key, i) {
            let host_words = match &host {
                Some(h) => format!("host {:?}", h.to_string()),
                None => "no host".to_owned(),
            };
            return Err(cx.invalid(
                &prefix_path,
                format!(
                    "duplicate route: routes[{first}] already has {host_words} and path_prefix {:?}",
                    raw_route.path_prefix
                ),
            ));
        }
        routes.push(RouteConfig {
            host,
            path_prefix: raw_route.path_prefix.clone(),
            backend,
            backend_name: raw_route.backend.clone(),
            mode,
            max_frame_size,
            max_message_size,
            strip_prefix: raw_route.strip_prefix.unwrap_or(false),
        });
    }

    // Limits.
    let raw_limits = raw.limits.unwrap_or_default();
    let mp = root.key("limits").key("max_connections");
    let max_connections = match raw_limits.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(Count(0)) => return Err(cx.invalid(&mp, "must be at least 1")),
        Some(Count(n)) => {
            usize::try_from(n).map_err(|_| cx.invalid(&mp, format!("{n} is too large")))?
        }
    };

    // Timeouts.
    let raw_timeouts = raw.timeouts.unwrap_or_default();
    let tp = root.key("timeouts");
    let timeouts = Timeouts {
        client_handshake: cx.duration(
            &tp.key("client_handshake"),
            raw_timeouts.client_handshake.as_ref(),
            DEFAULT_CLIENT_HANDSHAKE_TIMEOUT,
        )?,
        close: cx.duration(
            &tp.key("close"),
            raw_timeouts.close.as_ref(),
            DEFAULT_CLOSE_TIMEOUT,
        )?,
    };

    // TLS files, last: everything else is known to be right.
    for tls_files in pending {
        let tp = lp.index(tls_files.listener).key("tls");
        let cert_field = tp.key("cert");
        let key_field = tp.key("key");
        let cert_chain =
            tls::load_cert_chain(&tls_files.cert_path).map_err(|m| cx.invalid(&cert_field, m))?;
        let key =
            tls::load_private_key(&tls_files.key_path).map_err(|m| cx.invalid(&key_field, m))?;
        tls::check_pair(&cert_chain, &key, &tls_files.cert_path, &tls_files.key_path).map_err(
            |(which, m)| match which {
                Which::Cert => cx.invalid(&cert_field, m),
                Which::Key => cx.invalid(&key_field, m),
            },
        )?;
        if let Some(listener) = listeners.get_mut(tls_files.listener) {
            listener.tls = Some(TlsConfig {
                cert_path: tls_files.cert_path,
                key_path: tls_files.key_path,
                cert_chain,
                key,
            });
        }
    }

    Ok(Config {
        listeners,
        routes,
        backends,
        limits: Limits { max_connections },
        timeouts,
    })
}

/// `backends.NAME.source_addresses`: addresses or IPv4 ranges, unicast and
/// distinct, at most [`MAX_SOURCE_ADDRESSES`] in all. A server written as an
/// IP address needs a source address of its family; servers written as names
/// are checked when they resolve.
fn source_addresses(
    cx: &Ctx<'_>,
    path: &FieldPath,
    items: &[Scalar],
    servers: &[ServerConfig],
) -> Result<Vec<IpAddr>, ConfigError> {
    if items.is_empty() {
        return Err(cx.invalid(
            path,
            "at least one address is required (leave the key out to let the system choose)",
        ));
    }
    let most = MAX_SOURCE_ADDRESSES as usize;
    let mut addresses = Vec::new();
    let mut seen = HashSet::new();
    for (i, Scalar(text)) in items.iter().enumerate() {
        let item = path.index(i);
        let parsed =
            parse_address_range(text, MAX_SOURCE_ADDRESSES).map_err(|m| cx.invalid(&item, m))?;
        if addresses.len() + parsed.len() > most {
            return Err(cx.invalid(&item, format!("more than {most} addresses in all")));
        }
        for ip in parsed {
            let mapped = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
            if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
                return Err(cx.invalid(&item, format!("{ip} is not a unicast address")));
            }
            if mapped {
                return Err(cx.invalid(
                    &item,
                    format!("{ip} is an IPv4-mapped IPv6 address: write the IPv4 address"),
                ));
            }
            if !seen.insert(ip) {
                return Err(cx.invalid(&item, format!("{ip} is listed twice")));
            }
            addresses.push(ip);
        }
    }
    for (j, server) in servers.iter().enumerate() {
        if let Ok(ip) = server.url.host.parse::<IpAddr>() {
            if !addresses.iter().any(|a| a.is_ipv4() == ip.is_ipv4()) {
                let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(cx.invalid(
                    path,
                    format!(
                        "no {family} address to connect to servers[{j}] ({}) from",
                        server.url.authority
                    ),
                ));
            }
        }
    }
    Ok(addresses)
}

/// Backend names appear in logs, metrics and field paths: keep them plain.
fn check_backend_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty backend name".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "backend name {name:?} may contain only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A prefix is the start of a request path: `/`, then no query or fragment.
fn check_path_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("path prefix {prefix:?} must start with '/'"));
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "path prefix {prefix:?} contains a space or control character"
        ));
    }
    if prefix.contains(['?', '#']) {
        return Err(format!(
            "path prefix {prefix:?} contains '?' or '#': routes match the path only"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "wsgate-config-test-{}-{tag}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create dir");
            }
            std::fs::write(&path, contents).expect("write file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes a fresh self-signed pair as `<prefix>cert.pem`, `<prefix>key.pem`.
    fn write_pair(dir: &TempDir, prefix: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("generate certificate");
        let cert = dir.write(&format!("{prefix}cert.pem"), ck.cert.pem().as_bytes());
        let key = dir.write(
            &format!("{prefix}key.pem"),
            ck.signing_key.serialize_pem().as_bytes(),
        );
        (cert, key)
    }

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_base(yaml, "test.yaml", Path::new("/nonexistent-wsgate-base"))
    }

    /// Asserts a validation error at `field`, `line`:`column`; returns its text.
    #[track_caller]
    fn invalid(yaml: &str, field: &str, line: usize, column: usize) -> String {
        match load(yaml) {
            Err(e @ ConfigError::Invalid { .. }) => {
                assert_eq!(e.field(), Some(field), "{e}");
                assert_eq!(e.position(), Some(Position { line, column }), "{e}");
                let text = e.to_string();
                let prefix = format!("test.yaml:{line}:{column}: {field}: ");
                assert!(text.starts_with(&prefix), "{text}");
                text
            }
            other => panic!("expected a validation error at {field}, got {other:?}"),
        }
    }

    /// Asserts a parse (schema/syntax) error at `line`:`column`; returns its text.
    #[track_caller]
    fn parse_err(yaml: &str, line: usize, column: usize) -> String {
        match load(yaml) {
            Err(e @ ConfigError::Parse { .. }) => {
                assert_eq!(e.position(), Some(Position { line, column }), "{e}");
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("test.yaml:{line}:{column}: ")),
                    "{text}"
                );
                text
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    const BASE: &str = "\
listeners:
  - bind: \"127.0.0.1:8080\"
routes:
  - path_prefix: /echo
    backend: echo
backends:
  echo:
    servers:
      - url: \"ws://127.0.0.1:9001\"
";

    #[test]
    fn design_minimal_example_with_real_pem_files() {
        let dir = TempDir::new("minimal");
        let (cert, key) = write_pair(&dir, "");
        let yaml = format!(
            "\
listeners:
  - bind: \"127.0.0.1:8443\"
    tls:
      cert: {}     # PEM chain
      key: {}       # PEM private key
routes:
  - path_prefix: /echo
    backend: echo
backends:
  echo:
    servers:
      - url: \"ws://127.0.0.1:9001\"
",
            cert.display(),
            key.display()
        );
        let config = Config::from_yaml(&yaml, "minimal.yaml").expect("valid config");
        assert_eq!(config.listeners.len(), 1);
        let listener = &config.listeners[0];
        assert_eq!(listener.bind, "127.0.0.1:8443".parse().unwrap());
        let tls = listener.tls.as_ref().expect("tls");
        assert_eq!(tls.cert_path, cert);
        assert_eq!(tls.key_path, key);
        assert_eq!(tls.cert_chain.len(), 1);
        assert!(matches!(tls.key, rustls_pki_types::PrivateKeyDer::Pkcs8(_)));
        let copy = tls.clone();
        assert_eq!(copy.key.secret_der(), tls.key.secret_der());
        assert_eq!(copy.cert_chain, tls.cert_chain);

        assert_eq!(config.routes.len(), 1);
        let route = &config.routes[0];
        assert_eq!(route.path_prefix, "/echo");
        assert_eq!(route.backend, 0);
        assert_eq!(route.backend_name, "echo");
        assert_eq!(config.backend_index("echo"), Some(0));
        assert_eq!(config.backend_index("chat"), None);
        let url = &config.backends[0].servers[0].url;
        assert_eq!(
            *url,
            BackendUrl {
                host: "127.0.0.1".into(),
                port: 9001,
                path: String::new(),
                authority: "127.0.0.1:9001".into()
            }
        );
    }

    #[test]
    fn defaults_applied() {
        let config = load(BASE).expect("valid");
        let route = &config.routes[0];
        assert_eq!(route.host, None);
        assert_eq!(route.mode, RelayMode::Frames);
        assert_eq!(route.max_frame_size, 16 * 1024 * 1024);
        assert_eq!(route.max_message_size, 64 * 1024 * 1024);
        assert!(!route.strip_prefix);
        let backend = &config.backends[0];
        assert_eq!(backend.name, "echo");
        assert_eq!(backend.connect_timeout, Duration::from_secs(5));
        assert_eq!(backend.handshake_timeout, Duration::from_secs(10));
        assert_eq!(backend.retries, 0);
        assert_eq!(config.limits.max_connections, 10_000);
        assert_eq!(config.timeouts.client_handshake, Duration::from_secs(10));
        assert_eq!(config.timeouts.close, Duration::from_secs(5));
        assert!(config.listeners[0].tls.is_none());

        // Empty sections take their defaults too.
        let config = load(&format!("{BASE}limits:\ntimeouts: {{}}\n")).expect("valid");
        assert_eq!(config.limits.max_connections, 10_000);
        assert_eq!(config.timeouts.close, Duration::from_secs(5));
    }

    #[test]
    fn default_retries_follow_server_count() {
        for (servers, expected) in [(1, 0), (2, 1), (3, 2), (7, 2)] {
            let mut yaml = String::from(
                "listeners: [{bind: \"127.0.0.1:1\"}]\nroutes: [{path_prefix: /, backend: b}]\nbackends:\n  b:\n    servers:\n",
            );
            for i in 0..servers {
                yaml.push_str(&format!("      - url: ws://10.0.0.1:{}\n", 9000 + i));
            }
            let config = load(&yaml).expect("valid");
            assert_eq!(config.backends[0].retries, expected, "{servers} servers");
        }
    }

    #[test]
    fn every_key_set() {
        let yaml = "\
listeners:
  - bind: \"[::1]:8080\"
  - bind: 0.0.0.0:8081
routes:
  - path_prefix: /chat
    backend: chat
    host: \"*.Example.com\"
    mode: tunnel
    max_frame_size: 64KiB
    max_message_size: 1MB
    strip_prefix: true
  - path_prefix: /chat
    backend: echo
    host: example.com
    max_frame_size: 4096
backends:
  echo:
    servers:
      - url: ws://127.0.0.1:9001
  chat:
    servers:
      - url: ws://[::1]:9002/chat/
      - url: ws://chat.internal
    connect_timeout: 500ms
    handshake_timeout: 1m
    retries: 100
limits:
  max_connections: 1
timeouts:
  client_handshake: 1h
  close: 2s
";
        let c = load(yaml).expect("valid");
        assert_eq!(c.listeners[0].bind, "[::1]:8080".parse().unwrap());
        assert_eq!(c.listeners[1].bind, "0.0.0.0:8081".parse().unwrap());
        let r0 = &c.routes[0];
        assert_eq!(r0.host, Some(HostPattern::Wildcard(".example.com".into())));
        assert_eq!(r0.mode, RelayMode::Tunnel);
        assert_eq!(r0.max_frame_size, 65536);
        assert_eq!(r0.max_message_size, 1_000_000);
        assert!(r0.strip_prefix);
        assert_eq!((r0.backend, r0.backend_name.as_str()), (1, "chat"));
        let r1 = &c.routes[1];
        assert_eq!(r1.host, Some(HostPattern::Exact("example.com".into())));
        assert_eq!(r1.max_frame_size, 4096);
        assert_eq!(r1.backend, 0);
        // File order of backends is kept.
        let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["echo", "chat"]);
        let chat = &c.backends[1];
        assert_eq!(chat.servers[0].url.host, "::1");
        assert_eq!(chat.servers[0].url.path, "/chat");
        assert_eq!(chat.servers[0].url.authority, "[::1]:9002");
        assert_eq!(chat.servers[1].url.authority, "chat.internal");
        assert_eq!(chat.servers[1].url.port, 80);
        assert_eq!(chat.connect_timeout, Duration::from_millis(500));
        assert_eq!(chat.handshake_timeout, Duration::from_secs(60));
        assert_eq!(chat.retries, 100);
        assert_eq!(c.limits.max_connections, 1);
        assert_eq!(c.timeouts.client_handshake, Duration::from_secs(3600));
        assert_eq!(c.timeouts.close, Duration::from_secs(2));
    }

    #[test]
    fn unknown_field_rejected_with_its_line() {
        let yaml = "\
listeners:
  - bind: \"127.0.0.1:8080\"
    tsl: {}
routes: []
backends: {}
";
        let text = parse_err(yaml, 3, 5);
        assert_eq!(
            text,
            "test.yaml:3:5: listeners[0]: unknown field `tsl`, expected `bind` or `tls`"
        );

        let yaml = BASE.replace("  echo:\n", "  echo:\n    weight: 2\n");
        let text = parse_err(&yaml, 8, 5);
        assert!(
            text.contains("backends.echo: unknown field `weight`"),
            "{text}"
        );

        let text = parse_err(&format!("{BASE}limit:\n  max_connections: 5\n"), 10, 1);
        assert!(text.contains("unknown field `limit`"), "{text}");
    }

    #[test]
    fn unknown_backend_lists_known_names() {
        let yaml = "\
listeners:
  - bind: \"127.0.0.1:8080\"
routes:
  - path_prefix: /echo
    backend: echo
  - path_prefix: /chat
    backend: ech
backends:
  echo:
    servers:
      - url: \"ws://127.0.0.1:9001\"
  chat:
    servers:
      - url: \"ws://127.0.0.1:9002\"
";
        let text = invalid(yaml, "routes[1].backend", 7, 14);
        assert_eq!(
            text,
            "test.yaml:7:14: routes[1].backend: unknown backend \"ech\" (known: echo, chat)"
        );
    }

    #[test]
    fn bind_must_be_a_socket_address() {
        let yaml = BASE.replace("\"127.0.0.1:8080\"", "localhost:8080");
        let text = invalid(&yaml, "listeners[0].bind", 2, 11);
        assert!(
            text.contains("invalid bind address \"localhost:8080\""),
            "{text}"
        );
        let yaml = BASE.replace("\"127.0.0.1:8080\"", "8080");
        invalid(&yaml, "listeners[0].bind", 2, 11);
    }

    #[test]
    fn duplicate_bind_refused() {
        let yaml = BASE.replace(
            "routes:",
            "  - bind: \"0.0.0.0:9\"\n  - bind: 127.0.0.1:8080\nroutes:",
        );
        let text = invalid(&yaml, "listeners[2].bind", 4, 11);
        assert!(
            text.ends_with("duplicate bind address 127.0.0.1:8080 (also listeners[0].bind)"),
            "{text}"
        );
        // Port 0 means "any free port": several are fine.
        let yaml = "\
listeners: [{bind: \"127.0.0.1:0\"}, {bind: \"127.0.0.1:0\"}]
routes: [{path_prefix: /, backend: b}]
backends: {b: {servers: [{url: \"ws://127.0.0.1:1\"}]}}
";
        assert_eq!(load(yaml).expect("valid").listeners.len(), 2);
    }

    #[test]
    fn path_prefix_must_start_with_slash() {
        let yaml = BASE.replace("path_prefix: /echo", "path_prefix: echo");
        let text = invalid(&yaml, "routes[0].path_prefix", 4, 18);
        assert!(
            text.ends_with("path prefix \"echo\" must start with '/'"),
            "{text}"
        );
        let yaml = BASE.replace("path_prefix: /echo", "path_prefix: \"/echo?x=1\"");
        invalid(&yaml, "routes[0].path_prefix", 4, 18);
    }

    #[test]
    fn host_pattern_syntax() {
        for (host, needle) in [
            ("\"example.com:443\"", "no port"),
            ("\"https://example.com\"", "no scheme"),
            ("\"*.*.example.com\"", "only one leading \"*.\""),
            ("\"foo.*.com\"", "whole leading label"),
            ("\"\"", "empty host pattern"),
        ] {
            let yaml = BASE.replace(
                "    backend: echo\n",
                &format!("    backend: echo\n    host: {host}\n"),
            );
            let text = invalid(&yaml, "routes[0].host", 6, 11);
            assert!(text.contains(needle), "{text}");
        }
    }

    #[test]
    fn mode_spelled_right() {
        let yaml = BASE.replace(
            "    backend: echo\n",
            "    backend: echo\n    mode: tunel\n",
        );
        let text = parse_err(&yaml, 6, 11);
        assert_eq!(
            text,
            "test.yaml:6:11: routes[0].mode: unknown variant `tunel`, expected `frames` or `tunnel`"
        );
    }

    #[test]
    fn sizes_checked_with_field_and_line() {
        let with = |extra: &str| {
            BASE.replace(
                "    backend: echo\n",
                &format!("    backend: echo\n{extra}"),
            )
        };
        let text = invalid(
            &with("    max_frame_size: 0\n"),
            "routes[0].max_frame_size",
            6,
            21,
        );
        assert!(text.ends_with("\"0\": must be at least 1 byte"), "{text}");
        let text = invalid(
            &with("    max_message_size: 0KiB\n"),
            "routes[0].max_message_size",
            6,
            23,
        );
        assert!(text.contains("at least 1 byte"), "{text}");
        let text = invalid(
            &with("    max_frame_size: 16mb\n"),
            "routes[0].max_frame_size",
            6,
            21,
        );
        assert!(
            text.contains("unknown unit \"mb\" (allowed: B, KiB, MiB"),
            "{text}"
        );
        let text = invalid(
            &with("    max_message_size: 99999999999TiB\n"),
            "routes[0].max_message_size",
            6,
            23,
        );
        assert!(text.contains("too large"), "{text}");
        // A mapping where a size belongs is a type error from the parser.
        let text = parse_err(&with("    max_frame_size: {a: 1}\n"), 6, 21);
        assert!(text.contains("expected a string or number"), "{text}");
    }

    #[test]
    fn duplicate_routes_refused() {
        let yaml = BASE.replace(
            "backends:",
            "  - path_prefix: /echo\n    backend: echo\nbackends:",
        );
        let text = invalid(&yaml, "routes[1].path_prefix", 6, 18);
        assert!(
            text.ends_with(
                "duplicate route: routes[0] already has no host and path_prefix \"/echo\""
            ),
            "{text}"
        );
        let yaml = "\
listeners: [{bind: \"127.0.0.1:1\"}]
routes:
  - {path_prefix: /a, backend: b, host: a.example.com}
  - {path_prefix: /a, backend: b, host: \"*.example.com\"}
  - {path_prefix: /a, backend: b}
  - {path_prefix: /a, backend: b, host: A.Example.COM}
backends: {b: {servers: [{url: \"ws://127.0.0.1:1\"}]}}
";
        let text = invalid(yaml, "routes[3].path_prefix", 6, 19);
        assert!(
            text.contains("routes[0] already has host \"a.example.com\""),
            "{text}"
        );
    }

    #[test]
    fn backend_urls_checked() {
        for (url, needle) in [
            ("wss://127.0.0.1:9001", "wss backends are not supported yet"),
            ("http://127.0.0.1:9001", "unsupported scheme"),
            ("ws://127.0.0.1:9001/?a=b", "no query"),
            ("ws://user@127.0.0.1:9001", "user name"),
            ("ws://127.0.0.1:70000", "above 65535"),
        ] {
            let yaml = BASE.replace("ws://127.0.0.1:9001", url);
            let text = invalid(&yaml, "backends.echo.servers[0].url", 9, 14);
            assert!(text.contains(needle), "{text}");
        }
    }

    #[test]
    fn servers_must_not_be_empty() {
        let yaml = BASE.replace(
            "    servers:\n      - url: \"ws://127.0.0.1:9001\"\n",
            "    servers: []\n",
        );
        let text = invalid(&yaml, "backends.echo.servers", 8, 5);
        assert!(text.ends_with("at least one server is required"), "{text}");
    }

    #[test]
    fn source_addresses_expand_ranges_in_order() {
        let config = load(BASE).unwrap();
        assert!(config.backends[0].source_addresses.is_empty());
        let yaml = format!(
            "{BASE}    source_addresses:\n      - 127.0.0.9\n      - \"127.0.0.2 - 127.0.0.4\"\n      - ::1\n"
        );
        let config = load(&yaml).unwrap();
        let text: Vec<String> = config.backends[0]
            .source_addresses
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(
            text,
            ["127.0.0.9", "127.0.0.2", "127.0.0.3", "127.0.0.4", "::1"]
        );
    }

    #[test]
    fn dns_refresh_is_a_positive_duration_of_5s_by_default() {
        assert_eq!(
            load(BASE).unwrap().backends[0].dns_refresh,
            Duration::from_secs(5)
        );
        let config = load(&format!("{BASE}    dns_refresh: 500ms\n")).unwrap();
        assert_eq!(config.backends[0].dns_refresh, Duration::from_millis(500));
        let text = invalid(
            &format!("{BASE}    dns_refresh: 0s\n"),
            "backends.echo.dns_refresh",
            10,
            18,
        );
        assert!(text.ends_with("must be greater than 0"), "{text}");
        invalid(
            &format!("{BASE}    dns_refresh: 30\n"),
            "backends.echo.dns_refresh",
            10,
            18,
        );
    }

    #[test]
    fn bad_source_addresses_name_the_item() {
        let list = |items: &str| format!("{BASE}    source_addresses:\n{items}");
        for (items, line, reason) in [
            (
                "      - 127.0.0.2\n      - example.com\n",
                12,
                "is neither an IP address",
            ),
            ("      - 127.0.0.9-127.0.0.2\n", 11, "ends before it starts"),
            (
                "      - 127.0.0.2-127.0.0.4\n      - 127.0.0.3\n",
                12,
                "127.0.0.3 is listed twice",
            ),
            ("      - 0.0.0.0\n", 11, "0.0.0.0 is not a unicast address"),
            ("      - \"::\"\n", 11, ":: is not a unicast address"),
            (
                "      - 224.0.0.1\n",
                11,
                "224.0.0.1 is not a unicast address",
            ),
            ("      - 255.255.255.255\n", 11, "is not a unicast address"),
            ("      - ::ffff:127.0.0.2\n", 11, "write the IPv4 address"),
            (
                "      - 10.0.0.0-10.1.0.0\n",
                11,
                "has more than 65536 addresses",
            ),
            (
                "      - 10.0.0.0-10.0.255.255\n      - 10.1.0.0\n",
                12,
                "more than 65536 addresses in all",
            ),
        ] {
            let yaml = list(items);
            let item = line - 11;
            let text = invalid(
                &yaml,
                &format!("backends.echo.source_addresses[{item}]"),
                line,
                9,
            );
            assert!(text.contains(reason), "{items:?}: {text}");
        }
        let text = invalid(
            &format!("{BASE}    source_addresses: []\n"),
            "backends.echo.source_addresses",
            10,
            5,
        );
        assert!(text.contains("at least one address is required"), "{text}");
    }

    #[test]
    fn source_addresses_must_cover_every_literal_server_family() {
        let yaml = BASE.replace(
            "      - url: \"ws://127.0.0.1:9001\"\n",
            "      - url: \"ws://127.0.0.1:9001\"\n      - url: \"ws://[::1]:9001\"\n      - url: \"ws://echo.internal:9001\"\n",
        );
        let text = invalid(
            &format!("{yaml}    source_addresses: [127.0.0.2]\n"),
            "backends.echo.source_addresses",
            12,
            5,
        );
        assert!(
            text.ends_with("no IPv6 address to connect to servers[1] ([::1]:9001) from"),
            "{text}"
        );
        let config = load(&format!(
            "{yaml}    source_addresses: [127.0.0.2, \"::1\"]\n"
        ))
        .unwrap();
        assert_eq!(config.backends[0].source_addresses.len(), 2);
    }

    #[test]
    fn retries_at_most_100() {
        let yaml = format!("{BASE}    retries: 101\n");
        let text = invalid(&yaml, "backends.echo.retries", 10, 14);
        assert!(text.ends_with("101 is too many: at most 100"), "{text}");
        let yaml = format!("{BASE}    retries: 99999999999\n");
        invalid(&yaml, "backends.echo.retries", 10, 14);
        let text = parse_err(&format!("{BASE}    retries: -1\n"), 10, 14);
        assert!(
            text.contains("expected a whole number, 0 or more"),
            "{text}"
        );
    }

    #[test]
    fn durations_need_a_unit_and_are_positive() {
        let text = invalid(
            &format!("{BASE}    connect_timeout: 5\n"),
            "backends.echo.connect_timeout",
            10,
            22,
        );
        assert!(
            text.contains("has no unit") && text.contains("ms, s, m, h"),
            "{text}"
        );
        let text = invalid(
            &format!("{BASE}    handshake_timeout: 0s\n"),
            "backends.echo.handshake_timeout",
            10,
            24,
        );
        assert!(text.ends_with("\"0s\": must be greater than 0"), "{text}");
        let text = invalid(
            &format!("{BASE}timeouts:\n  close: 3 days\n"),
            "timeouts.close",
            11,
            10,
        );
        assert!(text.contains("unknown unit \"days\""), "{text}");
        invalid(
            &format!("{BASE}timeouts:\n  client_handshake: 1.5s\n"),
            "timeouts.client_handshake",
            11,
            21,
        );
    }

    #[test]
    fn max_connections_at_least_one() {
        let text = invalid(
            &format!("{BASE}limits:\n  max_connections: 0\n"),
            "limits.max_connections",
            11,
            20,
        );
        assert!(text.ends_with("must be at least 1"), "{text}");
    }

    #[test]
    fn required_sections_present_and_non_empty() {
        let text = invalid(
            &BASE.replace(
                "listeners:\n  - bind: \"127.0.0.1:8080\"\n",
                "listeners: []\n",
            ),
            "listeners",
            1,
            1,
        );
        assert!(
            text.ends_with("at least one listener is required"),
            "{text}"
        );
        let yaml = BASE.replace(
            "routes:\n  - path_prefix: /echo\n    backend: echo\n",
            "routes: []\n",
        );
        invalid(&yaml, "routes", 3, 1);
        let yaml = "listeners: [{bind: \"127.0.0.1:1\"}]\nroutes: [{path_prefix: /, backend: b}]\nbackends: {}\n";
        let text = invalid(yaml, "backends", 3, 1);
        assert!(text.ends_with("at least one backend is required"), "{text}");
        let text = parse_err("routes: []\nbackends: {}\n", 1, 1);
        assert!(text.ends_with("missing field `listeners`"), "{text}");
        let text = parse_err("# nothing here\n", 2, 1);
        assert!(text.contains("no settings"), "{text}");
    }

    #[test]
    fn duplicate_backend_names_and_keys() {
        let yaml = format!("{BASE}  echo:\n    servers: []\n");
        let text = parse_err(&yaml, 10, 3);
        assert!(
            text.ends_with("backends: name \"echo\" is defined twice"),
            "{text}"
        );
        let yaml = BASE.replace(
            "    backend: echo\n",
            "    backend: echo\n    path_prefix: /x\n",
        );
        let text = parse_err(&yaml, 6, 5);
        assert!(text.contains("duplicate field `path_prefix`"), "{text}");
    }

    #[test]
    fn backend_names_are_plain() {
        let yaml = BASE
            .replace("  echo:", "  \"e cho\":")
            .replace("backend: echo", "backend: e cho");
        let text = invalid(&yaml, "backends.e cho", 7, 3);
        assert!(text.contains("may contain only letters"), "{text}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let text = parse_err(
            "listeners:\n  - bind: \"127.0.0.1:8080\"\n  routes: x\n",
            3,
            3,
        );
        assert!(text.contains("did not find expected"), "{text}");
        let text = parse_err(&format!("{BASE}---\nlisteners: []\n"), 10, 1);
        assert!(text.contains("more than one YAML document"), "{text}");
    }

    #[test]
    fn tls_files_are_read_and_checked() {
        let dir = TempDir::new("tls");
        let (cert, key) = write_pair(&dir, "");
        let (_, other_key) = write_pair(&dir, "other-");
        let empty = dir.write("empty.pem", b"\n");
        let garbage = dir.write("garbage.pem", b"this is not a certificate\n");
        let bad_base64 = dir.write(
            "bad64.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let not_x509 = dir.write(
            "notx509.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let missing = dir.0.join("missing.pem");
        let yaml = |c: &Path, k: &Path| {
            format!(
                "{}    tls:\n      cert: {}\n      key: {}\n{}",
                "listeners:\n  - bind: \"127.0.0.1:8443\"\n",
                c.display(),
                k.display(),
                "routes: [{path_prefix: /, backend: b}]\nbackends: {b: {servers: [{url: \"ws://127.0.0.1:1\"}]}}\n"
            )
        };
        assert!(load(&yaml(&cert, &key)).is_ok());

        let cert_field = "listeners[0].tls.cert";
        let key_field = "listeners[0].tls.key";
        let text = invalid(&yaml(&missing, &key), cert_field, 4, 13);
        assert!(
            text.contains("cannot read certificate file") && text.contains("missing.pem"),
            "{text}"
        );
        let text = invalid(&yaml(&empty, &key), cert_field, 4, 13);
        assert!(text.contains("is empty"), "{text}");
        let text = invalid(&yaml(&garbage, &key), cert_field, 4, 13);
        assert!(text.contains("no certificate found"), "{text}");
        let text = invalid(&yaml(&bad_base64, &key), cert_field, 4, 13);
        assert!(text.contains("not valid PEM"), "{text}");
        let text = invalid(&yaml(&not_x509, &key), cert_field, 4, 13);
        assert!(text.contains("not a valid X.509 certificate"), "{text}");

        let text = invalid(&yaml(&cert, &missing), key_field, 5, 12);
        assert!(text.contains("cannot read private key file"), "{text}");
        let text = invalid(&yaml(&cert, &cert), key_field, 5, 12);
        assert!(text.contains("no private key found"), "{text}");
        let text = invalid(&yaml(&cert, &garbage), key_field, 5, 12);
        assert!(text.contains("no private key found"), "{text}");
        let text = invalid(&yaml(&cert, &other_key), key_field, 5, 12);
        assert!(text.contains("does not match the certificate"), "{text}");
        let text = invalid(&yaml(&cert, &empty), key_field, 5, 12);
        assert!(text.contains("is empty"), "{text}");

        // A flow mapping has positions too; an empty path is refused.
        let yaml = "\
listeners:
  - bind: \"127.0.0.1:8443\"
    tls: { cert: \"\", key: /k.pem }
routes: [{path_prefix: /, backend: b}]
backends: {b: {servers: [{url: \"ws://127.0.0.1:1\"}]}}
";
        let text = invalid(yaml, cert_field, 3, 18);
        assert!(text.ends_with("empty path"), "{text}");
    }

    #[test]
    fn structural_errors_come_before_tls_files() {
        let yaml = "\
listeners:
  - bind: \"127.0.0.1:8443\"
    tls: { cert: /missing/cert.pem, key: /missing/key.pem }
routes: [{path_prefix: /, backend: nope}]
backends: {b: {servers: [{url: \"ws://127.0.0.1:1\"}]}}
";
        invalid(yaml, "routes[0].backend", 4, 36);
    }

    #[test]
    fn relative_tls_paths_resolve_against_the_config_directory() {
        let dir = TempDir::new("relative");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        dir.write("certs/cert.pem", ck.cert.pem().as_bytes());
        dir.write("certs/key.pem", ck.signing_key.serialize_pem().as_bytes());
        let path = dir.write(
            "wsgate.yaml",
            BASE.replace(
                "\nroutes:",
                "\n    tls: {cert: certs/cert.pem, key: certs/key.pem}\nroutes:",
            )
            .as_bytes(),
        );
        let config = Config::load(&path).expect("valid");
        let tls = config.listeners[0].tls.as_ref().expect("tls");
        assert_eq!(tls.cert_path, dir.0.join("certs/cert.pem"));
        assert_eq!(tls.key_path, dir.0.join("certs/key.pem"));
        // from_yaml with the same path as origin behaves the same.
        let text = std::fs::read_to_string(&path).unwrap();
        let origin = path.display().to_string();
        assert!(Config::from_yaml(&text, &origin).is_ok());
        // Elsewhere, the relative paths do not resolve; the error names the
        // field and the file.
        let err = load(&text).unwrap_err();
        assert_eq!(err.field(), Some("listeners[0].tls.cert"));
        assert_eq!(err.position().map(|p| p.line), Some(3));
    }

    #[test]
    fn load_reports_io_errors_with_the_path() {
        let dir = TempDir::new("io");
        let path = dir.0.join("absent.yaml");
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}: cannot read config file: ", path.display())),
            "{text}"
        );
        let bad = dir.write("latin1.yaml", b"listeners: \xff\n");
        let text = Config::load(&bad).unwrap_err().to_string();
        assert!(text.contains("not valid UTF-8"), "{text}");
        // Errors in a loaded file name it.
        let file = dir.write(
            "bad.yaml",
            BASE.replace("backend: echo", "backend: ech").as_bytes(),
        );
        let text = Config::load(&file).unwrap_err().to_string();
        assert!(
            text.starts_with(&format!(
                "{}:5:14: routes[0].backend: unknown backend",
                file.display()
            )),
            "{text}"
        );
    }

    #[test]
    fn shipped_configs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let config = Config::load(&root.join("wsgate.yaml")).expect("config/wsgate.yaml loads");
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].bind, "127.0.0.1:8080".parse().unwrap());
        assert!(config.listeners[0].tls.is_none());
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.routes[0].path_prefix, "/echo");
        assert_eq!(config.routes[0].mode, RelayMode::Frames);
        assert_eq!(config.backends[0].name, "echo");
        assert_eq!(
            config.backends[0].servers[0].url.authority,
            "127.0.0.1:9001"
        );

        // The examples' certificates do not exist: they parse up to the TLS
        // files, and the error names the field and its line.
        let err = Config::load(&root.join("examples/tls.yaml")).unwrap_err();
        assert_eq!(err.field(), Some("listeners[0].tls.cert"), "{err}");
        assert_eq!(err.position().map(|p| p.line), Some(15), "{err}");
        let err = Config::load(&root.join("examples/minimal.yaml")).unwrap_err();
        assert_eq!(err.field(), Some("listeners[0].tls.cert"), "{err}");
        assert_eq!(err.position().map(|p| p.line), Some(7), "{err}");

        // With certificates beside it, tls.yaml loads as a whole.
        let dir = TempDir::new("example");
        let text = std::fs::read(root.join("examples/tls.yaml")).unwrap();
        let path = dir.write("tls.yaml", &text);
        dir.write("certs/.keep", b"");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        dir.write("certs/cert.pem", ck.cert.pem().as_bytes());
        dir.write("certs/key.pem", ck.signing_key.serialize_pem().as_bytes());
        let c = Config::load(&path).expect("tls.yaml loads with certificates");
        assert_eq!(c.listeners.len(), 2);
        assert!(c.listeners[0].tls.is_some() && c.listeners[1].tls.is_none());
        assert!(c.routes.iter().any(|r| r.mode == RelayMode::Tunnel));
        assert!(c
            .routes
            .iter()
            .any(|r| matches!(r.host, Some(HostPattern::Wildcard(_)))));
        assert_eq!(c.backends[0].servers.len(), 2);
    }

    #[test]
    fn no_panic_on_mangled_input() {
        // Every prefix of a valid file, and every single-character change to
        // a few troublesome characters, loads or fails cleanly.
        let full = format!(
            "{BASE}    retries: 1\n    connect_timeout: 5s\nlimits: {{max_connections: 3}}\ntimeouts:\n  close: 1s\n"
        );
        for (i, _) in full.char_indices() {
            let _ = load(&full[..i]);
            for c in [
                '\t', ':', '-', '[', '{', '*', '&', '!', '"', '\'', 'ä', '\u{0}', '#', '|',
            ] {
                let mut mangled = String::from(&full[..i]);
                mangled.push(c);
                if let Some(rest) = full.get(i + 1..) {
                    mangled.push_str(rest);
                }
                let _ = load(&mangled);
            }
        }
        for odd in [
            "[".repeat(10_000),
            "{".repeat(10_000),
            "- ".repeat(5_000),
            "a: &x [*x]\n".to_owned(),
            "listeners: &l [{bind: \"127.0.0.1:1\"}]\nroutes: *l\nbackends: {}\n".to_owned(),
            "\u{feff}listeners: []\n".to_owned(),
            "? [a]\n: b\n".to_owned(),
            "listeners: !!binary aGVsbG8=\n".to_owned(),
        ] {
            let _ = load(&odd);
        }
    }
}
