//! The `tunnel` relay mode: after both handshakes, bytes are copied raw.
//!
//! No frame is parsed, so nothing is validated and the proxy never speaks in
//! the session itself: it only mirrors each peer's half-close to the other
//! and stops when both directions have ended (or either fails). Between two
//! plain TCP sockets bulk data never enters user space ([`splice`]); small
//! messages, and everything where TLS is in between, are copied through a
//! lent chunk, as in `frames` mode.
//!
//! [`splice`]: super::splice

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::pump::{End, ReadReady, Step, Transform};
use super::splice::{BareTcp, SplicePump};
use super::{ClosedBy, Outcome, Traffic};

/// The identity transform: every byte read is written.
#[derive(Debug, Default)]
pub struct Raw;

impl Transform for Raw {
    fn process(&mut self, buf: &mut [u8]) -> (Step, Option<End>) {
        let step = Step {
            emit: buf.len(),
            consume: buf.len(),
            boundary: false,
        };
        (step, None)
    }
}

/// Progress of one tunnel direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    /// Copying.
    Open,
    /// The source ended; shutting down the destination's write side.
    ShuttingDown,
    /// Done.
    Closed,
}

/// Relays bytes both ways until both peers have closed their sending side.
pub async fn relay<C, B>(
    client: &mut C,
    client_prefix: Bytes,
    backend: &mut B,
    backend_prefix: Bytes,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + ReadReady + BareTcp + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + ReadReady + BareTcp + Unpin + ?Sized,
{
    let mut up = SplicePump::new(client_prefix);
    let mut down = SplicePump::new(backend_prefix);
    let (mut up_half, mut down_half) = (Half::Open, Half::Open);
    let mut closed_by = None;
    poll_fn(|cx| loop {
        let up_event = poll_half(cx, &mut up, &mut up_half, &mut *client, &mut *backend);
        let down_event = poll_half(cx, &mut down, &mut down_half, &mut *backend, &mut *client);
        for (event, who, gone) in [
            (up_event, ClosedBy::Client, ClosedBy::ClientVanished),
            (down_event, ClosedBy::Backend, ClosedBy::BackendVanished),
        ] {
            match event {
                HalfEvent::Eof => {
                    closed_by.get_or_insert(who);
                }
                HalfEvent::Failed => {
                    // An I/O error on either side ends the tunnel.
                    closed_by.get_or_insert(gone);
                    return Poll::Ready(());
                }
                HalfEvent::Idle | HalfEvent::Progress => {}
            }
        }
        if up_half == Half::Closed && down_half == Half::Closed {
            return Poll::Ready(());
        }
        if up_event == HalfEvent::Idle && down_event == HalfEvent::Idle {
            return Poll::Pending;
        }
    })
    .await;
    Outcome {
        client_to_backend: Traffic {
            bytes: up.bytes_out(),
            messages: 0,
        },
        backend_to_client: Traffic {
            bytes: down.bytes_out(),
            messages: 0,
        },
        close_code: None,
        closed_by: closed_by.unwrap_or(ClosedBy::Client),
    }
}

/// What one poll of a tunnel direction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HalfEvent {
    /// Nothing could be done; a waker is registered.
    Idle,
    /// A state change; poll again.
    Progress,
    /// The source ended cleanly (and the half-close is being mirrored).
    Eof,
    /// Reading or writing failed.
    Failed,
}

/// Drives one direction: copy until the source ends, then shut down the
/// destination's write side.
fn poll_half<S, D>(
    cx: &mut std::task::Context<'_>,
    pump: &mut SplicePump,
    half: &mut Half,
    src: &mut S,
    dst: &mut D,
) -> HalfEvent
where
    S: AsyncRead + ReadReady + BareTcp + Unpin + ?Sized,
    D: AsyncWrite + BareTcp + Unpin + ?Sized,
{
    let mut event = HalfEvent::Idle;
    if *half == Half::Open {
        match pump.poll_relay(cx, src, dst) {
            Poll::Pending => return HalfEvent::Idle,
            Poll::Ready(End::Eof) => {
                *half = Half::ShuttingDown;
                event = HalfEvent::Eof;
            }
            Poll::Ready(_) => return HalfEvent::Failed,
        }
    }
    if *half == Half::ShuttingDown && Pin::new(&mut *dst).poll_shutdown(cx).is_ready() {
        *half = Half::Closed;
        if event == HalfEvent::Idle {
            event = HalfEvent::Progress;
        }
    }
    event
}
