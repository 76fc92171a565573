//! Fixtures shared by the integration tests: wsgate started in-process on
//! 127.0.0.1:0 from inline YAML, backends built on tokio-tungstenite (an
//! independent WebSocket implementation) or on raw sockets, test
//! certificates, and raw-byte clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use wsgate::config::Config;
use wsgate::server::Server;
use wsgate::shutdown::Shutdown;

/// Upper bound for any single wait in a test, so a bug fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running wsgate; shut down when dropped.
pub struct Proxy {
    /// Bound listener addresses, in config order.
    pub addrs: Vec<SocketAddr>,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts wsgate from YAML text; `{backend}` style placeholders are the caller's business.
    pub async fn start(yaml: &str) -> Proxy {
        let config = Config::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("config: {e}"));
        let server = Server::bind(config).await.expect("bind");
        let addrs = server.local_addrs();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Proxy {
            addrs,
            shutdown,
            task,
        }
    }

    /// A plain proxy with one route `/` (plus whatever `route_extra` adds to
    /// it) to the given backend servers.
    pub async fn simple(servers: &[SocketAddr], route_extra: &str) -> Proxy {
        Proxy::start(&simple_yaml(servers, route_extra, "")).await
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addrs[0], path)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// YAML for one plain listener, one route `/` and one backend.
pub fn simple_yaml(servers: &[SocketAddr], route_extra: &str, backend_extra: &str) -> String {
    let servers: String = servers
        .iter()
        .map(|a| format!("      - url: \"ws://{a}\"\n"))
        .collect();
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n  - path_prefix: /\n    backend: b\n{route_extra}\
         backends:\n  b:\n    connect_timeout: 2s\n    handshake_timeout: 2s\n{backend_extra}    servers:\n{servers}\
         timeouts:\n  close: 2s\n  client_handshake: 2s\n"
    )
}

/// What a test backend received, for assertions.
pub type Seen = Arc<tokio::sync::Mutex<Vec<Message>>>;

/// A tokio-tungstenite echo backend; returns its address. It answers with
/// the first offered subprotocol and records the request headers it saw.
pub async fn echo_backend() -> SocketAddr {
    spawn_backend(|mut ws| async move {
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A backend running `session` for every accepted WebSocket connection.
pub async fn spawn_backend<F, Fut>(session: F) -> SocketAddr
where
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    spawn_backend_with(choose_first_protocol, session).await
}

/// Like [`spawn_backend`], with a handshake callback.
pub async fn spawn_backend_with<C, F, Fut>(callback: C, session: F) -> SocketAddr
where
    C: Fn(&Request, Response) -> Result<Response, ErrorResponse>
        + Clone
        + Send
        + Sync
        + Unpin
        + 'static,
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let session = Arc::new(session);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let session = session.clone();
            let callback = callback.clone();
            tokio::spawn(async move {
                let config = WebSocketConfig::default()
                    .max_message_size(None)
                    .max_frame_size(None);
                if let Ok(ws) =
                    tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
                        .await
                {
                    session(ws).await;
                }
            });
        }
    });
    addr
}

/// Handshake callback: choose the first offered subprotocol.
#[allow(clippy::result_large_err)]
pub fn choose_first_protocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if let Some(first) = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
    {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", first.trim().parse().unwrap());
    }
    Ok(response)
}

/// A backend that accepts TCP and hands the raw socket to `session`.
pub async fn raw_backend<F, Fut>(session: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let session = Arc::new(session);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn((session.clone())(stream));
        }
    });
    addr
}

/// An address on which nothing listens.
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a tokio-tungstenite client with no size limits.
pub async fn connect(url: &str) -> Client {
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_with_config(url, Some(config), false),
    )
    .await
    .expect("connect timed out")
    .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// Next message, failing the test after [`WAIT`].
pub async fn next(ws: &mut Client) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no message in time")
        .expect("stream ended")
        .expect("read error")
}

/// Sends raw bytes as an HTTP request and returns the whole response head and body
/// read until the server closes or `WAIT` passes.
pub async fn raw_request(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A valid upgrade request for `path`, with extra header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Opens a raw WebSocket connection through the proxy (handshake done by
/// hand), returning the socket positioned after the 101 response.
pub async fn raw_ws(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(upgrade_request(path, "").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed during handshake: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Encodes a frame as a client would (masked with a fixed key unless `mask` is false).
pub fn client_frame(fin: bool, rsv: u8, opcode: u8, mask: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(fin as u8) << 7 | rsv << 4 | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n < 65536 => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    if mask {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads one unmasked frame from a raw socket: (first byte, payload).
pub async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let read = async {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                stream.read_exact(&mut b).await.ok()?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                stream.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        Some((head[0], payload))
    };
    tokio::time::timeout(WAIT, read).await.ok().flatten()
}

/// Close code of a close frame payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A test certificate authority and a server certificate for localhost
/// and 127.0.0.1, written as PEM files into a fresh directory.
pub struct TestPki {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!(
            "wsgate-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params_for_issuer(), &ca_key);
        let leaf = params.signed_by(&key, &issuer).unwrap();
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TestPki {
            dir,
            cert: cert_path,
            key: key_path,
            ca_der: ca.der().clone(),
        }
    }

    /// A rustls client config that trusts only the test CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

fn ca_params_for_issuer() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t ^ N.fetch_add(1, Ordering::Relaxed) << 48
}

/// Connects over wss trusting the test CA.
pub async fn connect_tls(url: &str, pki: &TestPki) -> Client {
    let connector = tokio_tungstenite::Connector::Rustls(pki.client_config());
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector)),
    )
    .await
    .expect("connect timed out")
    .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}
