//! `wsgate bench` as a user runs it: the built binary against `wsgate echo`
//! started as a child process on 127.0.0.1, and against small servers in
//! the test. Every run is short (1 s, no warm-up) and killed if it hangs.
//!
//! Covered: echo mode with `--json` (every documented field present, >0
//! messages, 0 errors), open-loop `--rate` (latency from the intended send
//! time), text and large messages, idle mode (50 of 50 alive),
//! `--source-ips` (each connection from its address), churn mode
//! (>0 sessions), `wss://` with `--ca` and with `--insecure` through wsgate,
//! and the failures a script must notice: a server that echoes wrong bytes
//! (mismatches, exit non-zero), a refused port, and an impossible
//! `--connections`.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{raw_ws_backend, read_frame_masked, TestPki};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// The longest any bench run in these tests may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(40);

/// `wsgate echo` as a child process; killed on drop.
struct EchoServer {
    child: Child,
    addr: SocketAddr,
}

impl EchoServer {
    fn start() -> EchoServer {
        // A free port: bind 0, note it, release it for the child.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new(BIN)
            .args(["echo", "--listen", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start wsgate echo");
        let server = EchoServer { child, addr };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "wsgate echo did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a bench run left behind.
struct Run {
    success: bool,
    json: Value,
    stderr: String,
}

/// Runs `wsgate bench URL --json --duration 1s --warmup 0s ARGS…` to the
/// end (killed after [`RUN_LIMIT`]) and parses its JSON.
async fn bench(url: &str, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["bench", url, "--json", "--duration", "1s", "--warmup", "0s"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("cannot start wsgate bench");
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("wsgate bench {url} {args:?} did not finish in time"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}): {stdout:?}\nstderr: {stderr}")
    });
    Run {
        success: output.status.success(),
        json,
        stderr,
    }
}

/// Runs the bench without `--json` and returns (success, stdout, stderr).
async fn bench_plain(url: &str, args: &[&str]) -> (bool, String, String) {
    let child = tokio::process::Command::new(BIN)
        .args(["bench", url])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start wsgate bench");
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("wsgate bench did not finish in time")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn u64_at(json: &Value, pointer: &str) -> u64 {
    json.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing or not a number in {json}"))
}

/// Every field the module doc promises.
const FIELDS: [&str; 33] = [
    "/url",
    "/mode",
    "/connections",
    "/threads",
    "/size",
    "/text",
    "/inflight",
    "/rate",
    "/duration_s",
    "/warmup_s",
    "/ramp_s",
    "/timeout_s",
    "/messages",
    "/messages_per_sec",
    "/payload_bytes",
    "/mb_per_sec",
    "/sessions",
    "/sessions_per_sec",
    "/alive",
    "/open_time_ms",
    "/connections_opened",
    "/connections_failed",
    "/latency_of",
    "/latency_us/p50",
    "/latency_us/p999",
    "/latency_us/max",
    "/errors/mismatch",
    "/errors/total",
    "/first_errors",
    "/cpu_seconds",
    "/cpu_us_per_message",
    "/ok",
    "/failure",
];

fn assert_clean(run: &Run) {
    assert!(
        run.success,
        "bench failed: {}\n{}",
        run.json["failure"], run.stderr
    );
    assert_eq!(u64_at(&run.json, "/errors/total"), 0, "{}", run.json);
    assert_eq!(run.json["ok"], Value::Bool(true));
    assert_eq!(run.json["failure"], Value::Null);
}

#[tokio::test]
async fn echo_mode_json_has_every_field_and_counts_messages() {
    let echo = EchoServer::start();
    let run = bench(
        &echo.url(),
        &["--connections", "4", "--inflight", "4", "--ramp", "0s"],
    )
    .await;
    assert_clean(&run);
    for field in FIELDS {
        assert!(
            run.json.pointer(field).is_some(),
            "{field} missing: {}",
            run.json
        );
    }
    let j = &run.json;
    assert_eq!(j["mode"], "echo");
    assert_eq!(j["latency_of"], "round-trip");
    assert_eq!(u64_at(j, "/inflight"), 4);
    assert_eq!(j["rate"], Value::Null);
    let messages = u64_at(j, "/messages");
    assert!(messages > 0, "{j}");
    assert_eq!(u64_at(j, "/payload_bytes"), messages * 64 * 2);
    assert_eq!(u64_at(j, "/latency_us/count"), messages);
    assert!(u64_at(j, "/latency_us/p50") > 0);
    assert!(u64_at(j, "/latency_us/p50") <= u64_at(j, "/latency_us/max"));
    assert_eq!(u64_at(j, "/connections_opened"), 4);
    assert_eq!(u64_at(j, "/connections_failed"), 0);
    // --json means no progress line on stderr.
    assert!(!run.stderr.contains("msgs/s"), "{}", run.stderr);
}

#[tokio::test]
async fn rate_mode_measures_latency_from_the_intended_send() {
    let echo = EchoServer::start();
    let run = bench(
        &echo.url(),
        &["--connections", "5", "--rate", "500", "--ramp", "0s"],
    )
    .await;
    assert_clean(&run);
    let j = &run.json;
    assert_eq!(j["latency_of"], "round-trip-from-intended-send");
    assert_eq!(j["inflight"], Value::Null);
    assert_eq!(j["rate"].as_f64(), Some(500.0));
    let messages = u64_at(j, "/messages");
    // 500/s for 1 s; allow for a slow machine but not for a runaway loop.
    assert!((100..=510).contains(&messages), "{j}");
    assert_eq!(u64_at(j, "/latency_us/count"), messages);
    assert!(u64_at(j, "/latency_us/p50") > 0);
    assert!(u64_at(j, "/latency_us/p99") >= u64_at(j, "/latency_us/p50"));
}

#[tokio::test]
async fn text_and_large_messages_are_verified() {
    let echo = EchoServer::start();
    let run = bench(
        &echo.url(),
        &[
            "--connections",
            "2",
            "--text",
            "--size",
            "5",
            "--ramp",
            "0s",
        ],
    )
    .await;
    assert_clean(&run);
    assert!(u64_at(&run.json, "/messages") > 0);
    let run = bench(
        &echo.url(),
        &[
            "--connections",
            "2",
            "--inflight",
            "3",
            "--size",
            "300KiB",
            "--ramp",
            "0s",
        ],
    )
    .await;
    assert_clean(&run);
    assert_eq!(u64_at(&run.json, "/size"), 300 * 1024);
    assert!(u64_at(&run.json, "/messages") > 0);
}

#[tokio::test]
async fn idle_mode_keeps_every_connection_alive() {
    let echo = EchoServer::start();
    let run = bench(
        &echo.url(),
        &["--mode", "idle", "--connections", "50", "--ramp", "200ms"],
    )
    .await;
    assert_clean(&run);
    let j = &run.json;
    assert_eq!(j["mode"], "idle");
    assert_eq!(u64_at(j, "/alive"), 50);
    assert_eq!(u64_at(j, "/connections_opened"), 50);
    assert_eq!(j["latency_of"], "open");
    assert_eq!(u64_at(j, "/latency_us/count"), 50);
    assert!(j["open_time_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn source_ips_spread_the_connections_over_the_addresses() {
    let (server, mut peers) = common::source_reporting_backend().await;
    let run = bench(
        &format!("ws://{server}/"),
        &[
            "--mode",
            "idle",
            "--connections",
            "4",
            "--ramp",
            "0s",
            "--source-ips",
            "127.0.0.2-127.0.0.3",
        ],
    )
    .await;
    assert_clean(&run);
    assert_eq!(u64_at(&run.json, "/alive"), 4);
    let mut sources = Vec::new();
    while let Ok(peer) = peers.try_recv() {
        sources.push(peer.ip().to_string());
    }
    sources.sort();
    assert_eq!(
        sources,
        ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]
    );
}

#[tokio::test]
async fn churn_mode_counts_whole_sessions() {
    let echo = EchoServer::start();
    let run = bench(
        &echo.url(),
        &["--mode", "churn", "--connections", "4", "--ramp", "0s"],
    )
    .await;
    assert_clean(&run);
    let j = &run.json;
    assert_eq!(j["mode"], "churn");
    let sessions = u64_at(j, "/sessions");
    assert!(sessions > 0, "{j}");
    assert_eq!(j["latency_of"], "session");
    assert_eq!(u64_at(j, "/latency_us/count"), sessions);
    assert!(u64_at(j, "/connections_opened") >= sessions);
}

#[tokio::test]
async fn human_output_and_progress() {
    let echo = EchoServer::start();
    let (ok, stdout, stderr) = bench_plain(
        &echo.url(),
        &["--duration", "2s", "--warmup", "0", "--connections", "2"],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    for want in ["messages", "msgs/s", "MB/s", "p99.9", "errors     none"] {
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }
    assert!(
        stderr.contains("msgs/s") && stderr.contains("open 2"),
        "no progress line:\n{stderr}"
    );
}

/// A server that completes the handshake and echoes every data frame with
/// its last byte flipped; answers close with close.
async fn byte_flipping_server() -> SocketAddr {
    raw_ws_backend(|mut stream, _head| async move {
        while let Some((b0, mut payload, _)) = read_frame_masked(&mut stream).await {
            let opcode = b0 & 0x0F;
            if opcode == 8 {
                let _ = stream.write_all(&frame(b0, &payload)).await;
                return;
            }
            if let Some(last) = payload.last_mut() {
                *last ^= 0x01;
            }
            if stream.write_all(&frame(b0, &payload)).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// An unmasked server frame.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_echoes_are_mismatches_and_fail_the_run() {
    let addr = byte_flipping_server().await;
    let run = bench(
        &format!("ws://{addr}/"),
        &["--connections", "3", "--ramp", "0s"],
    )
    .await;
    assert!(!run.success, "a run with mismatches must exit non-zero");
    let j = &run.json;
    assert!(u64_at(j, "/errors/mismatch") > 0, "{j}");
    assert_eq!(u64_at(j, "/messages"), 0, "{j}");
    assert_eq!(j["ok"], Value::Bool(false));
    assert!(j["failure"].as_str().unwrap().contains("mismatch"), "{j}");
    assert!(j["first_errors"]["mismatch"].is_string(), "{j}");
    assert!(run.stderr.contains("mismatch"), "{}", run.stderr);
}

/// A server that completes the handshake, then reads everything and
/// answers nothing.
async fn silent_server() -> SocketAddr {
    raw_ws_backend(|mut stream, _head| async move {
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
}

/// Regression: an open loop whose connections all had their most echoes
/// outstanding, with the end of sending already past but its schedule
/// behind, found its alarm (set for that end) gone off on every turn and
/// never let the thread go, so the run's hard deadline never came and
/// the bench hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_behind_its_schedule_still_ends_at_the_hard_deadline() {
    let addr = silent_server().await;
    // 20 000 msgs/s per connection: its 16 384 sends in flight are out
    // before the 1 s window ends, and no echo ever frees one.
    let started = Instant::now();
    let run = bench(
        &format!("ws://{addr}/"),
        &[
            "--connections",
            "2",
            "--rate",
            "40000",
            "--ramp",
            "0s",
            "--timeout",
            "1s",
        ],
    )
    .await;
    assert!(!run.success, "a run without echoes must fail");
    let j = &run.json;
    assert!(u64_at(j, "/errors/timeout") > 0, "{j}");
    assert_eq!(u64_at(j, "/messages"), 0, "{j}");
    // Ends at the hard deadline (duration + 4 × timeout + 3 s), far
    // inside the harness's limit.
    assert!(started.elapsed() < RUN_LIMIT / 2, "{:?}", started.elapsed());
}

#[tokio::test]
async fn refused_connections_fail_the_run() {
    let addr = common::dead_address().await;
    let run = bench(&format!("ws://{addr}/"), &["--connections", "2"]).await;
    assert!(!run.success);
    assert_eq!(u64_at(&run.json, "/errors/connect"), 2, "{}", run.json);
    assert_eq!(u64_at(&run.json, "/connections_failed"), 2);
}

#[tokio::test]
async fn impossible_connection_counts_are_refused_up_front() {
    let (ok, _, stderr) = bench_plain("ws://127.0.0.1:9/", &["--connections", "9000000"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("file descriptors") || stderr.contains("--source-ips"),
        "{stderr}"
    );
    let (ok, _, stderr) = bench_plain("http://127.0.0.1:9/", &[]).await;
    assert!(!ok);
    assert!(stderr.contains("ws://"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_wsgate_with_ca_and_insecure() {
    let echo = EchoServer::start();
    let pki = TestPki::new();
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      cert: \"{}\"\n      key: \"{}\"\n\
         routes:\n  - path_prefix: /\n    backend: b\nbackends:\n  b:\n    servers:\n      - url: \"ws://{}\"\n",
        pki.cert.display(),
        pki.key.display(),
        echo.addr
    );
    let proxy = common::Proxy::start(&yaml).await;
    let url = format!("wss://localhost:{}/", proxy.addr().port());
    let ca = pki.cert.to_str().unwrap();
    let run = bench(&url, &["--connections", "2", "--ca", ca, "--ramp", "0s"]).await;
    assert_clean(&run);
    assert!(u64_at(&run.json, "/messages") > 0);
    let run = bench(
        &url,
        &[
            "--mode",
            "churn",
            "--connections",
            "2",
            "--insecure",
            "--ramp",
            "0s",
        ],
    )
    .await;
    assert_clean(&run);
    assert!(u64_at(&run.json, "/sessions") > 0);
}
