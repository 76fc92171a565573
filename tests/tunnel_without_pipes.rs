//! A tunnel between two plain sockets splices through kernel pipes. When the
//! process cannot open a pipe (it is out of descriptors), the tunnel copies
//! instead and the session carries on undisturbed. This lowers the process's
//! descriptor limit, so it lives in a test binary of its own.

mod common;

use std::os::fd::AsRawFd;

use common::*;
use futures_util::SinkExt;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_tunnel_copies_when_no_pipe_can_be_opened() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "    mode: tunnel\n").await;
    let mut ws = connect(&proxy.ws_url("/")).await;

    // From here on no descriptor can be opened: the lowest free one is at
    // the limit.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd();
    setrlimit(Resource::RLIMIT_NOFILE, lowest_free as u64, hard).unwrap();
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "descriptors are exhausted"
    );

    ws.send(Message::text("no pipe")).await.unwrap();
    let echoed = next(&mut ws).await;
    // Bulk that a plain tunnel would splice.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut echoed_big = Vec::new();
    for _ in 0..4 {
        ws.send(Message::binary(big.clone())).await.unwrap();
        echoed_big.push(next(&mut ws).await);
    }
    let pipes = wsgate::relay::splice::pooled_pipes();
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();

    assert_eq!(echoed, Message::text("no pipe"));
    assert!(echoed_big
        .iter()
        .all(|m| *m == Message::binary(big.clone())));
    assert_eq!(pipes, 0, "no pipe was ever opened");
}
