//! Idle mode: open many connections, hold them, and check each is alive.
//!
//! Each connection is opened (spread over `--ramp`), then only reads:
//! pings from the server are answered, anything else is ignored. When every
//! connection has either opened or failed, the hold of `--duration` starts;
//! at its end every connection sends one ping and counts as alive if the
//! matching pong comes back within `--timeout`. Then it is closed with the
//! closing handshake. The latency recorded is the time to open a
//! connection (TCP connect, TLS, upgrade).

use std::rc::Rc;
use std::sync::atomic::Ordering;

use tokio::time::{sleep_until, timeout, Instant};

use crate::ws::close::{is_allowed_on_wire, NO_STATUS};
use crate::ws::frame::OpCode;
use crate::ws::mask::random_key;

use super::conn::{
    answer_close, close, close_code, send_frame, seq_tag, Conn, Control, Event, Failure,
    FrameReader,
};
use super::error::ErrorKind;
use super::worker::Worker;

/// Read buffer of an idle connection: only control frames matter.
const READ_BUFFER: usize = 512;

/// How a phase of an idle connection ended badly.
enum Stop {
    /// The server sent close with this code (counted already).
    ServerClosed(u16),
    /// Broken (counted already).
    Failed,
}

/// One connection of idle mode.
pub(crate) async fn session(w: Rc<Worker>, index: usize) {
    let plan = &*w.plan;
    let o = &plan.opts;
    let mut reader = FrameReader::new(READ_BUFFER);
    let started = Instant::now();
    let opened = w.open(index, &mut reader).await;
    if opened.is_some() {
        w.stats.borrow_mut().record(started.elapsed());
    }
    if plan.settled.fetch_add(1, Ordering::AcqRel) + 1 == o.connections {
        let _ = plan.check_at.send(Some(Instant::now() + o.duration));
    }
    let Some((mut conn, _open)) = opened else {
        return;
    };
    let key = random_key();
    let stop = match hold(&w, index, &mut conn, &mut reader, key).await {
        Ok(()) => check(&w, index, &mut conn, &mut reader, key).await,
        Err(stop) => Err(stop),
    };
    match stop {
        Ok(()) => {
            w.stats.borrow_mut().alive += 1;
            if let Err(failure) = close(&mut conn, &mut reader, key, o.timeout).await {
                w.failure(index, failure);
            }
        }
        Err(Stop::ServerClosed(code)) => {
            let code = if is_allowed_on_wire(code) {
                code
            } else {
                NO_STATUS
            };
            answer_close(&mut conn, &mut reader, code, key, o.timeout).await;
        }
        Err(Stop::Failed) => {}
    }
}

/// Handles the buffered frames: answers pings, returns the payload of the
/// first pong, stops on close.
async fn handle_frames(
    w: &Worker,
    index: usize,
    conn: &mut Conn,
    reader: &mut FrameReader,
    key: [u8; 4],
    pong: &mut Option<[u8; 8]>,
) -> Result<(), Stop> {
    loop {
        let reply = match reader.next_event() {
            Ok(None) => return Ok(()),
            Ok(Some(Event::Ping(payload))) => Control::new(OpCode::Pong, payload, key),
            Ok(Some(Event::Pong(payload))) => {
                if let Ok(p) = <[u8; 8]>::try_from(payload) {
                    *pong = Some(p);
                }
                continue;
            }
            Ok(Some(Event::Data { .. })) => continue,
            Ok(Some(Event::Close(payload))) => {
                let code = close_code(payload);
                w.failure(
                    index,
                    (
                        ErrorKind::Closed,
                        format!("the server sent close {code} while the connection was held"),
                    ),
                );
                return Err(Stop::ServerClosed(code));
            }
            Err(e) => {
                w.failure(index, (ErrorKind::Protocol, e.to_string()));
                return Err(Stop::Failed);
            }
        };
        if let Err(e) = send_frame(conn, reply.bytes(), w.plan.opts.timeout).await {
            w.failure(index, (ErrorKind::Closed, format!("answering a ping: {e}")));
            return Err(Stop::Failed);
        }
    }
}

/// Reads more bytes, counting EOF and errors as the server closing.
async fn fill(
    w: &Worker,
    index: usize,
    conn: &mut Conn,
    reader: &mut FrameReader,
) -> Result<(), Stop> {
    let failure: Failure = match reader.fill(conn).await {
        Ok(0) => (
            ErrorKind::Closed,
            "the server closed TCP while the connection was held".to_owned(),
        ),
        Ok(_) => return Ok(()),
        Err(e) => (ErrorKind::Closed, format!("reading: {e}")),
    };
    w.failure(index, failure);
    Err(Stop::Failed)
}

/// Keeps the connection until the check time.
async fn hold(
    w: &Worker,
    index: usize,
    conn: &mut Conn,
    reader: &mut FrameReader,
    key: [u8; 4],
) -> Result<(), Stop> {
    let plan = &*w.plan;
    let mut check_at = plan.check_at.subscribe();
    let mut pong = None;
    loop {
        handle_frames(w, index, conn, reader, key, &mut pong).await?;
        let at = *check_at.borrow_and_update();
        tokio::select! {
            r = fill(w, index, conn, reader) => r?,
            changed = check_at.changed(), if at.is_none() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = sleep_until(at.unwrap_or(plan.hard_deadline)) => return Ok(()),
        }
    }
}

/// Sends one ping and waits for its pong.
async fn check(
    w: &Worker,
    index: usize,
    conn: &mut Conn,
    reader: &mut FrameReader,
    key: [u8; 4],
) -> Result<(), Stop> {
    let limit = w.plan.opts.timeout;
    let tag = seq_tag(index as u64);
    let ping = Control::new(OpCode::Ping, &tag, key);
    if let Err(e) = send_frame(conn, ping.bytes(), limit).await {
        w.failure(
            index,
            (ErrorKind::Closed, format!("sending the check ping: {e}")),
        );
        return Err(Stop::Failed);
    }
    let answered = timeout(limit, async {
        let mut pong = None;
        loop {
            handle_frames(w, index, conn, reader, key, &mut pong).await?;
            if pong == Some(tag) {
                return Ok(());
            }
            fill(w, index, conn, reader).await?;
        }
    })
    .await;
    match answered {
        Ok(r) => r,
        Err(_) => {
            w.failure(
                index,
                (
                    ErrorKind::Timeout,
                    format!("no pong within {limit:?} for the check ping"),
                ),
            );
            Err(Stop::Failed)
        }
    }
}
