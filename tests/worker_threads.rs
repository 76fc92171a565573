//! `WORKER_THREADS` as an operator sets it on the `wsgate run` binary: one
//! worker runs on a current-thread runtime, more on the work-stealing one.
//! Either way a session relays, a SIGTERM drains it with close 1001 and the
//! process exits cleanly, also when nobody reads its log any more; a value
//! that is not a positive number is refused before anything starts.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use common::{echo_backend, simple_yaml, wsgate_command, WAIT};

/// A client session through the proxy.
type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `wsgate run` child; killed on drop so a failed assertion leaves
/// nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `yaml` to a file of its own in the temp directory.
fn config_file(yaml: &str, tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "wsgate-worker-threads-{}-{tag}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts `wsgate run` with `WORKER_THREADS=threads` and returns it with the
/// address from its `listening` log line.
fn start_proxy(config: &std::path::Path, threads: &str) -> (Running, SocketAddr) {
    let (running, addr, lines) = start_proxy_and_log(config, threads);
    // Keep reading the log so that the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (running, addr)
}

/// Like [`start_proxy`], but hands back the rest of the log.
fn start_proxy_and_log(
    config: &std::path::Path,
    threads: &str,
) -> (Running, SocketAddr, std::io::Lines<BufReader<ChildStdout>>) {
    let mut command = wsgate_command(&["run", "--config", config.to_str().unwrap()]);
    command.env("WORKER_THREADS", threads);
    let mut running = Running(command.spawn().expect("cannot start the wsgate binary"));
    let stdout = running.0.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("wsgate exited before it was listening")
            .unwrap();
        if let Some(rest) = line
            .split(" addr=")
            .nth(1)
            .filter(|_| line.contains("listening"))
        {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    (running, addr, lines)
}

/// Waits (bounded) for the child to exit and returns whether it succeeded.
fn wait_exit(running: &mut Running) -> bool {
    let started = Instant::now();
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            return status.success();
        }
        assert!(
            started.elapsed() < WAIT,
            "wsgate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to the child.
fn send_sigterm(running: &Running) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A WebSocket client through the proxy at `addr`.
async fn connect(addr: SocketAddr) -> Client {
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/")),
    )
    .await
    .expect("connect timed out")
    .expect("connect through the proxy");
    ws
}

/// Sends `text` and checks that it comes back.
async fn echo(ws: &mut Client, text: String) {
    ws.send(Message::text(text.clone())).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("echo timed out")
        .expect("stream ended")
        .unwrap();
    assert_eq!(echoed, Message::text(text));
}

/// Sends SIGTERM and checks the drain: close 1001 from the proxy, which
/// the client answers, and then the process exits on its own, with
/// success.
async fn stop_and_expect_drain(proxy: &mut Running, ws: &mut Client, threads: &str) {
    send_sigterm(proxy);
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame with {threads} worker(s), got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    assert!(
        wait_exit(proxy),
        "wsgate exited with an error after SIGTERM ({threads} worker(s))"
    );
}

#[tokio::test]
async fn one_worker_and_several_relay_and_drain_on_sigterm() {
    let backend = echo_backend().await;
    for threads in ["1", "2"] {
        let config = config_file(&simple_yaml(&[backend], "", ""), threads);
        let (mut proxy, addr) = start_proxy(&config, threads);
        let mut ws = connect(addr).await;
        for n in 0..100 {
            echo(&mut ws, format!("message {n} with {threads} worker(s)")).await;
        }
        stop_and_expect_drain(&mut proxy, &mut ws, threads).await;
        let _ = std::fs::remove_file(config);
    }
}

#[test]
fn worker_threads_must_be_a_positive_number() {
    let config = config_file(
        &simple_yaml(&["127.0.0.1:9".parse().unwrap()], "", ""),
        "bad",
    );
    for bad in ["0", "many", "-1"] {
        let mut command = wsgate_command(&["run", "--config", config.to_str().unwrap()]);
        command.env("WORKER_THREADS", bad);
        let output = common::run_to_completion(command);
        assert!(
            !output.status.success(),
            "WORKER_THREADS={bad} was accepted"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "WORKER_THREADS=\"{bad}\" is not a positive number"
            )),
            "unexpected error for WORKER_THREADS={bad}: {stderr}"
        );
    }
    let _ = std::fs::remove_file(config);
}

/// Nobody reads the log any more (a pager or `grep -m1` that quit): the
/// writes fail, and still a SIGTERM drains and stops the proxy, whose
/// sessions keep relaying meanwhile.
#[tokio::test]
async fn a_proxy_whose_log_is_gone_still_relays_and_stops_on_sigterm() {
    let backend = echo_backend().await;
    for threads in ["1", "2"] {
        let config = config_file(
            &simple_yaml(&[backend], "", ""),
            &format!("nolog-{threads}"),
        );
        let (mut proxy, addr, lines) = start_proxy_and_log(&config, threads);
        drop(lines);
        drop(proxy.0.stderr.take());
        // A session opened after the log is gone logs, and still relays.
        let mut ws = connect(addr).await;
        echo(&mut ws, "no one reads the log".to_string()).await;
        stop_and_expect_drain(&mut proxy, &mut ws, threads).await;
        let _ = std::fs::remove_file(config);
    }
}
