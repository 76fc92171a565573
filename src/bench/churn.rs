//! Churn mode: each of the `--connections` slots runs whole sessions back
//! to back until the end of the window: TCP connect, TLS, upgrade, one
//! echo (verified), the closing handshake with close 1000, and the TCP
//! close. The latency recorded is that of a whole session.

use std::rc::Rc;
use std::time::Duration;

use tokio::time::{sleep_until, timeout, Instant};

use crate::ws::frame::OpCode;

use super::conn::{
    close, close_code, payload_template, send_frame, Conn, Control, Event, Expected, Failure,
    FrameReader, Outgoing,
};
use super::error::ErrorKind;
use super::report::Progress;
use super::worker::Worker;

/// Pause after a failed session, so that a refusing server is not hammered
/// in a tight loop.
const BACKOFF: Duration = Duration::from_millis(50);

/// One slot of churn mode.
pub(crate) async fn slot(w: Rc<Worker>, index: usize) {
    let plan = &*w.plan;
    let o = &plan.opts;
    let template = payload_template(o.size, o.text, index);
    let opcode = if o.text { OpCode::Text } else { OpCode::Binary };
    let mut out = Outgoing::new(&template, opcode, 1);
    let expected = Expected::new(template);
    let mut reader = FrameReader::new((o.size + 14).clamp(1024, 64 * 1024));
    let mut seq = 0u64;
    loop {
        let start = Instant::now();
        if start >= plan.end {
            return;
        }
        let ok = session(&w, index, &mut reader, &mut out, &expected, seq).await;
        seq += 1;
        if ok {
            let elapsed = start.elapsed();
            Progress::add(&w.progress().done, 1);
            Progress::add(&w.progress().bytes, 2 * o.size as u64);
            if plan.in_window(start) {
                let mut stats = w.stats.borrow_mut();
                stats.sessions += 1;
                stats.record(elapsed);
            }
        } else {
            sleep_until((Instant::now() + BACKOFF).min(plan.end)).await;
        }
    }
}

/// One whole session; false if it failed (the failure is counted).
async fn session(
    w: &Worker,
    index: usize,
    reader: &mut FrameReader,
    out: &mut Outgoing,
    expected: &Expected,
    seq: u64,
) -> bool {
    let limit = w.plan.opts.timeout;
    let Some((mut conn, _open)) = w.open(index, reader).await else {
        return false;
    };
    let len = out.stamp(1, seq);
    if let Err(e) = send_frame(&mut conn, &out.bytes()[..len], limit).await {
        w.failure(index, (ErrorKind::Closed, format!("sending: {e}")));
        return false;
    }
    let opcode = if w.plan.opts.text {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    let key = out.key();
    let echoed = match timeout(
        limit,
        echo(&mut conn, reader, expected, (opcode, seq), key, limit),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err((ErrorKind::Timeout, format!("no echo within {limit:?}"))),
    };
    if let Err(failure) = echoed {
        w.failure(index, failure);
        return false;
    }
    match close(&mut conn, reader, out.key(), limit).await {
        Ok(()) => true,
        Err(failure) => {
            w.failure(index, failure);
            false
        }
    }
}

/// Reads the echo of message `seq` and checks it.
async fn echo(
    conn: &mut Conn,
    reader: &mut FrameReader,
    expected: &Expected,
    sent: (OpCode, u64),
    key: [u8; 4],
    limit: Duration,
) -> Result<(), Failure> {
    let (opcode, seq) = sent;
    let mut intact = true;
    loop {
        loop {
            let reply = match reader.next_event() {
                Ok(None) => break,
                Ok(Some(Event::Data {
                    opcode: got,
                    offset,
                    chunk,
                    last,
                })) => {
                    if offset == 0 {
                        intact = got == opcode;
                    }
                    intact = intact && expected.matches(seq, offset, chunk);
                    if !last {
                        continue;
                    }
                    let len = offset + chunk.len() as u64;
                    if intact && len == expected.len() as u64 {
                        return Ok(());
                    }
                    return Err((
                        ErrorKind::Mismatch,
                        format!("the echo of message {seq} differs from what was sent"),
                    ));
                }
                Ok(Some(Event::Ping(payload))) => Control::new(OpCode::Pong, payload, key),
                Ok(Some(Event::Pong(_))) => continue,
                Ok(Some(Event::Close(payload))) => {
                    return Err((
                        ErrorKind::Closed,
                        format!(
                            "the server sent close {} before the echo",
                            close_code(payload)
                        ),
                    ))
                }
                Err(e) => return Err((ErrorKind::Protocol, e.to_string())),
            };
            send_frame(conn, reply.bytes(), limit)
                .await
                .map_err(|e| (ErrorKind::Closed, format!("answering a ping: {e}")))?;
        }
        match reader.fill(conn).await {
            Ok(0) => {
                return Err((
                    ErrorKind::Closed,
                    "the server closed TCP before the echo".to_owned(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err((ErrorKind::Closed, format!("reading: {e}"))),
        }
    }
}
