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

/// The `wsgate` binary with `args`, ready to spawn: no stdin, stdout and
/// stderr piped, INFO logging. For the tests of the binary itself (config
/// errors, log output, allocator settings).
pub fn wsgate_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"));
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env("RUST_LOG", "info");
    command
}

/// Runs `command` to completion and returns what it printed; kills it and
/// fails the test if it is still running after [`WAIT`].
pub fn run_to_completion(mut command: std::process::Command) -> std::process::Output {
    let mut child = command.spawn().expect("cannot start the wsgate binary");
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{command:?} still running after {WAIT:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Backend settings used unless a test gives its own.
pub const BACKEND_DEFAULTS: &str = "    connect_timeout: 2s\n    handshake_timeout: 2s\n";
/// Top-level sections used unless a test gives its own.
pub const TIMEOUT_DEFAULTS: &str = "timeouts:\n  close: 2s\n  client_handshake: 2s\n";

/// YAML for one plain listener, one route `/` and one backend.
pub fn simple_yaml(servers: &[SocketAddr], route_extra: &str, backend_extra: &str) -> String {
    Cfg::new(servers)
        .route(route_extra)
        .backend(&format!("{BACKEND_DEFAULTS}{backend_extra}"))
        .yaml()
}

/// A config of one plain listener, one route and one backend `b`, each part
/// replaceable. Indentation: `route` lines at 4 spaces (under `- path_prefix`),
/// `backend` lines at 4 spaces, `sections` at column 0.
#[derive(Debug, Clone)]
pub struct Cfg {
    servers: Vec<SocketAddr>,
    prefix: String,
    route: String,
    backend: String,
    sections: String,
}

impl Cfg {
    pub fn new(servers: &[SocketAddr]) -> Cfg {
        Cfg {
            servers: servers.to_vec(),
            prefix: "/".into(),
            route: String::new(),
            backend: BACKEND_DEFAULTS.into(),
            sections: TIMEOUT_DEFAULTS.into(),
        }
    }

    /// The route's `path_prefix`.
    pub fn prefix(mut self, prefix: &str) -> Cfg {
        self.prefix = prefix.into();
        self
    }

    /// Extra route keys, e.g. `"    mode: tunnel\n"`.
    pub fn route(mut self, lines: &str) -> Cfg {
        self.route = lines.into();
        self
    }

    /// The backend's settings (replacing the default timeouts).
    pub fn backend(mut self, lines: &str) -> Cfg {
        self.backend = lines.into();
        self
    }

    /// Top-level sections (replacing the default `timeouts`).
    pub fn sections(mut self, text: &str) -> Cfg {
        self.sections = text.into();
        self
    }

    pub fn yaml(&self) -> String {
        let servers: String = self
            .servers
            .iter()
            .map(|a| format!("      - url: \"ws://{a}\"\n"))
            .collect();
        format!(
            "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n  - path_prefix: {}\n    backend: b\n{}\
             backends:\n  b:\n{}    servers:\n{servers}{}",
            self.prefix, self.route, self.backend, self.sections
        )
    }

    pub async fn start(&self) -> Proxy {
        Proxy::start(&self.yaml()).await
    }
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
            // Test peers write small frames back to back: no Nagle delays.
            let _ = stream.set_nodelay(true);
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
            let _ = stream.set_nodelay(true);
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
    stream.set_nodelay(true).unwrap();
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

/// Reads one frame from a raw socket: (first byte, payload, unmasked if it
/// was masked). `None` on EOF, error or after [`WAIT`].
pub async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    read_frame_masked(stream)
        .await
        .map(|(b0, payload, _)| (b0, payload))
}

/// Like [`read_frame`], also telling whether the frame was masked.
pub async fn read_frame_masked(stream: &mut TcpStream) -> Option<(u8, Vec<u8>, bool)> {
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
        let masked = head[1] & 0x80 != 0;
        let mut key = [0u8; 4];
        if masked {
            stream.read_exact(&mut key).await.ok()?;
        }
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        Some((head[0], payload, masked))
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

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
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

// ---------------------------------------------------------------------------
// Backends that report what they saw.

/// The handshake request a backend received.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Path and query.
    pub uri: String,
    pub headers: tokio_tungstenite::tungstenite::http::HeaderMap,
}

impl SeenRequest {
    /// All values of header `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The single value of header `name`; fails if it is missing or repeated.
    pub fn one(&self, name: &str) -> String {
        let all = self.all(name);
        assert_eq!(all.len(), 1, "header {name}: {all:?} in {:?}", self.headers);
        all.into_iter().next().unwrap()
    }
}

/// An echo backend that reports every handshake request it gets and answers
/// with `choose` (e.g. [`choose_first_protocol`]).
pub async fn recording_backend_with<C>(
    choose: C,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<SeenRequest>,
)
where
    C: Fn(&Request, Response) -> Result<Response, ErrorResponse>
        + Clone
        + Send
        + Sync
        + Unpin
        + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[allow(clippy::result_large_err)]
    let callback = move |request: &Request, response: Response| {
        let _ = tx.send(SeenRequest {
            uri: request.uri().to_string(),
            headers: request.headers().clone(),
        });
        choose(request, response)
    };
    let addr = spawn_backend_with(callback, |mut ws| async move {
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    })
    .await;
    (addr, rx)
}

/// [`recording_backend_with`] choosing the first offered subprotocol.
pub async fn recording_backend() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<SeenRequest>,
) {
    recording_backend_with(choose_first_protocol).await
}

/// Next handshake a recording backend saw, failing after [`WAIT`].
pub async fn next_request(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<SeenRequest>,
) -> SeenRequest {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the backend saw no handshake in time")
        .expect("backend gone")
}

/// A tokio-tungstenite echo backend that reports the address every TCP
/// connection to it comes from.
pub async fn source_reporting_backend(
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let _ = tx.send(peer);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// What a reporting backend observed on its WebSocket.
#[derive(Debug)]
pub enum Event {
    /// A message (data, ping, pong or close) as tungstenite delivered it.
    Message(Message),
    /// tungstenite reported an error (e.g. the TCP connection ended without
    /// a close frame).
    Error(String),
    /// The stream ended.
    End,
}

pub type Events = tokio::sync::mpsc::UnboundedReceiver<Event>;

/// A tokio-tungstenite backend that echoes data messages and reports every
/// message it receives (control frames included) and how its stream ended.
pub async fn reporting_backend() -> (SocketAddr, Events) {
    reporting_backend_sending(Vec::new()).await
}

/// Like [`reporting_backend`], sending `first` on each session before the
/// echo loop.
pub async fn reporting_backend_sending(first: Vec<Message>) -> (SocketAddr, Events) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = spawn_backend(move |mut ws| {
        let tx = tx.clone();
        let first = first.clone();
        async move {
            for message in first {
                if let Err(e) = ws.send(message).await {
                    let _ = tx.send(Event::Error(e.to_string()));
                    return;
                }
            }
            loop {
                match ws.next().await {
                    Some(Ok(message)) => {
                        let echo = message.is_text() || message.is_binary();
                        let _ = tx.send(Event::Message(message.clone()));
                        if echo && ws.send(message).await.is_err() {
                            let _ = tx.send(Event::Error("echo failed".into()));
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Event::Error(e.to_string()));
                        return;
                    }
                    None => {
                        let _ = tx.send(Event::End);
                        return;
                    }
                }
            }
        }
    })
    .await;
    (addr, rx)
}

/// Next event of a reporting backend, failing after [`WAIT`].
pub async fn next_event(rx: &mut Events) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no backend event in time")
        .expect("backend gone")
}

/// Waits for the close frame a reporting backend receives, skipping data
/// messages; fails if the stream ends without one or after [`WAIT`].
/// Returns (code, reason), `None` for a close without a status code.
pub async fn backend_close(rx: &mut Events) -> Option<(u16, String)> {
    loop {
        match next_event(rx).await {
            Event::Message(Message::Close(frame)) => {
                return frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string()))
            }
            Event::Message(_) => continue,
            other => panic!("backend saw no close frame: {other:?}"),
        }
    }
}

/// Reads an HTTP request or response head (up to and including the blank
/// line) byte by byte, so nothing after it is consumed. Fails after [`WAIT`]
/// or if the stream ends first.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("head not complete in time")
            .unwrap_or(0);
        assert_eq!(
            n,
            1,
            "stream ended inside the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The 101 a correct server sends for the request `head`.
pub fn switching_protocols(head: &str, extra: &str) -> String {
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })
        .expect("request without Sec-WebSocket-Key");
    let accept = wsgate::ws::handshake::accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    )
}

/// A raw backend that reads the upgrade request, answers a correct 101, and
/// hands the socket (after the handshake) and the request head to `session`.
pub async fn raw_ws_backend<F, Fut>(session: F) -> SocketAddr
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let session = Arc::new(session);
    raw_backend(move |mut stream| {
        let session = session.clone();
        async move {
            let head = read_head(&mut stream).await;
            let answer = switching_protocols(&head, "");
            if stream.write_all(answer.as_bytes()).await.is_ok() {
                session(stream, head).await;
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Raw clients.

/// An HTTP response split into its parts.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw: String,
}

impl HttpResponse {
    pub fn parse(raw: &str) -> HttpResponse {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {raw:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        HttpResponse {
            status,
            headers,
            body: body.to_string(),
            raw: raw.to_string(),
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// [`raw_request`], parsed.
pub async fn http(addr: SocketAddr, request: &str) -> HttpResponse {
    HttpResponse::parse(&raw_request(addr, request).await)
}

/// Sends `request` and reads only the response head (works for a 101 that
/// keeps the connection open). Returns the stream with it.
pub async fn request_head(addr: SocketAddr, request: &str) -> (HttpResponse, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    (HttpResponse::parse(&head), stream)
}

/// Like [`raw_ws`] with a request of the caller's own; fails unless the
/// answer is 101. Returns the socket after the head, and the head.
pub async fn raw_ws_with(addr: SocketAddr, request: &str) -> (TcpStream, HttpResponse) {
    let (response, stream) = request_head(addr, request).await;
    assert_eq!(response.status, 101, "{}", response.raw);
    (stream, response)
}

/// Encodes a frame as a server would: unmasked.
pub fn server_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(fin, rsv, opcode, false, payload)
}

/// A close frame payload: code then reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Reads frames until a close frame and returns its payload; other frames
/// are skipped (at most 100). Fails if the stream ends first.
pub async fn read_close(stream: &mut TcpStream) -> Vec<u8> {
    for _ in 0..100 {
        let (b0, payload) = read_frame(stream)
            .await
            .expect("the stream ended (or WAIT passed) without a close frame");
        if b0 & 0x0f == 0x8 {
            assert_eq!(b0 & 0xf0, 0x80, "close frame with FIN clear or RSV bits");
            return payload;
        }
    }
    panic!("no close frame among 100 frames");
}

/// The close code in the next close frame on a raw client socket.
pub async fn read_close_code(stream: &mut TcpStream) -> u16 {
    let payload = read_close(stream).await;
    close_code(&payload).unwrap_or_else(|| panic!("close frame without a code: {payload:?}"))
}

/// Reads until EOF (or a reset) and returns what came; fails after [`WAIT`].
pub async fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("the connection was not closed in time");
        match read {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Connects a tokio-tungstenite client with a request of the caller's own
/// (extra headers), returning the handshake response too.
pub async fn connect_request(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> (
    Client,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), false),
    )
    .await
    .expect("connect timed out")
    .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// Reads client messages until the stream ends (after a close), failing after
/// [`WAIT`]. Returns the close frame seen, if any.
pub async fn drain(ws: &mut Client) -> Option<Message> {
    let mut close = None;
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("stream did not end in time")
        {
            Some(Ok(m @ Message::Close(_))) => close = Some(m),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return close,
        }
    }
}
