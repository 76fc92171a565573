//! Echo mode: every connection sends messages and checks that each comes
//! back byte for byte, in order.
//!
//! Closed loop (the default): a connection keeps `--inflight` messages
//! outstanding, sending the next as soon as an echo arrives, and latency is
//! measured from the actual send. Open loop (`--rate`): each connection
//! sends on a fixed schedule, interleaved with the other connections so
//! that sends are spread evenly in time, and latency is measured from the
//! *intended* send time, so a slow server cannot hide its delay by slowing
//! the sender down (no coordinated omission).
//!
//! One task drives both directions of a connection: a single poll writes
//! what is pending, reads what has arrived and watches one timer, so
//! neither direction can block the other and no lock or channel is needed.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::Instant;

use crate::ws::close::{is_allowed_on_wire, NO_STATUS};
use crate::ws::frame::OpCode;

use super::conn::{
    answer_close, close, close_code, payload_template, Conn, Control, Event, Expected, FrameReader,
    Outgoing,
};
use super::error::ErrorKind;
use super::pacer::Alarm;
use super::report::Progress;
use super::worker::Worker;

/// Bytes of frames a closed-loop connection writes at once at most.
const BATCH_BYTES: usize = 64 * 1024;
/// Bytes of frames an open-loop connection writes at once at most (only
/// when catching up).
const OPEN_BATCH_BYTES: usize = 8 * 1024;
/// Open loop: the most messages a connection keeps in flight, at least.
const OPEN_MIN_INFLIGHT: usize = 64;
/// Open loop: the most messages a connection keeps in flight, at most.
const OPEN_MAX_INFLIGHT: usize = 16 * 1024;

/// The open-loop send times of one connection: every `period`, starting
/// `offset` after the run's start, so that the `N` connections together
/// send one message every `1 / rate` seconds.
#[derive(Debug)]
pub(crate) struct Schedule {
    origin: Instant,
    offset_ns: f64,
    period_ns: f64,
    /// The number of the next send.
    next: u64,
}

impl Schedule {
    /// The schedule of connection `index` of `connections` at `rate`
    /// messages per second in total.
    pub fn new(origin: Instant, index: usize, connections: usize, rate: f64) -> Schedule {
        Schedule {
            origin,
            offset_ns: index as f64 / rate * 1e9,
            period_ns: connections as f64 / rate * 1e9,
            next: 0,
        }
    }

    /// The intended time of send number `k`.
    #[inline]
    pub fn at(&self, k: u64) -> Instant {
        self.origin + Duration::from_nanos((self.offset_ns + k as f64 * self.period_ns) as u64)
    }

    /// The intended time of the next send.
    #[inline]
    pub fn next(&self) -> Instant {
        self.at(self.next)
    }

    /// Skips the sends intended before `t` (the connection was not open
    /// yet).
    pub fn skip_to(&mut self, t: Instant) {
        let since = t.saturating_duration_since(self.origin).as_nanos() as f64;
        if since > self.offset_ns {
            self.next = ((since - self.offset_ns) / self.period_ns).ceil() as u64;
        }
    }
}

/// How a connection's loop ended.
enum End {
    /// Everything sent was echoed: close it.
    Done,
    /// The server sent a close frame with this code (counted already).
    ServerClosed(u16),
    /// Broken or timed out (counted already): drop it.
    Failed,
}

/// One connection of echo mode, from connect to close.
pub(crate) async fn session(w: Rc<Worker>, index: usize) {
    let o = &w.plan.opts;
    let frame_len = o.size + 14;
    let (copies, cap) = match o.rate {
        None => (o.inflight.min((BATCH_BYTES / frame_len).max(1)), o.inflight),
        Some(rate) => {
            let per_conn = (rate / o.connections as f64).ceil() as usize;
            let cap = per_conn.clamp(OPEN_MIN_INFLIGHT, OPEN_MAX_INFLIGHT);
            ((OPEN_BATCH_BYTES / frame_len).clamp(1, cap), cap)
        }
    };
    let mut reader = FrameReader::new((frame_len * cap.min(16)).clamp(4096, 64 * 1024));
    let Some((mut conn, _open)) = w.open(index, &mut reader).await else {
        return;
    };
    let template = payload_template(o.size, o.text, index);
    let opcode = if o.text { OpCode::Text } else { OpCode::Binary };
    let mut out = Outgoing::new(&template, opcode, copies);
    let expected = Expected::new(template);
    let end = run(&w, index, &mut conn, &mut reader, &mut out, &expected, cap).await;
    match end {
        End::Done => {
            if let Err(failure) = close(&mut conn, &mut reader, out.key(), o.timeout).await {
                w.failure(index, failure);
            }
        }
        End::ServerClosed(code) => {
            let code = if is_allowed_on_wire(code) {
                code
            } else {
                NO_STATUS
            };
            answer_close(&mut conn, &mut reader, code, out.key(), o.timeout).await;
        }
        End::Failed => {}
    }
}

/// What one poll of the connection achieved.
#[derive(Default)]
struct Io {
    /// Bytes written.
    wrote: usize,
    /// Whether TLS still has buffered bytes to flush.
    flush: bool,
    /// The result of a read, if one completed.
    read: Option<io::Result<usize>>,
    /// A write or flush error.
    failed: Option<io::Error>,
}

/// Writes from `out` (if not empty), flushes TLS, reads into `reader`, and
/// waits on `timer`, all in one poll; ready as soon as any made progress.
fn poll_io(
    cx: &mut Context<'_>,
    conn: &mut Conn,
    reader: &mut FrameReader,
    out: &[u8],
    flush: bool,
    timer: &mut Alarm<'_>,
) -> Poll<Io> {
    let mut io = Io {
        flush,
        ..Io::default()
    };
    let mut ready = false;
    if !out.is_empty() {
        match Pin::new(&mut *conn).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => {
                io.failed = Some(io::ErrorKind::WriteZero.into());
                return Poll::Ready(io);
            }
            Poll::Ready(Ok(n)) => {
                io.wrote = n;
                io.flush |= matches!(conn, Conn::Tls(_));
                ready = true;
            }
            Poll::Ready(Err(e)) => {
                io.failed = Some(e);
                return Poll::Ready(io);
            }
            Poll::Pending => {}
        }
    }
    if io.flush && io.wrote == out.len() {
        match Pin::new(&mut *conn).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                io.flush = false;
                ready = true;
            }
            Poll::Ready(Err(e)) => {
                io.failed = Some(e);
                return Poll::Ready(io);
            }
            Poll::Pending => {}
        }
    }
    if let Poll::Ready(r) = reader.poll_fill(cx, conn) {
        io.read = Some(r);
        ready = true;
    }
    if !ready && timer.poll(cx).is_ready() {
        ready = true;
    }
    if ready {
        Poll::Ready(io)
    } else {
        Poll::Pending
    }
}

/// The send/receive loop of one connection, until everything sent has been
/// echoed after the end of the window, or it fails.
#[allow(clippy::too_many_arguments)]
async fn run(
    w: &Worker,
    index: usize,
    conn: &mut Conn,
    reader: &mut FrameReader,
    out: &mut Outgoing,
    expected: &Expected,
    cap: usize,
) -> End {
    let plan = &*w.plan;
    let o = &plan.opts;
    let size = o.size as u64;
    let opcode = if o.text { OpCode::Text } else { OpCode::Binary };
    let key = out.key();
    let grace_end = plan.end + o.timeout;
    let mut schedule = o.rate.map(|rate| {
        let mut s = Schedule::new(plan.start, index, o.connections, rate);
        s.skip_to(Instant::now());
        s
    });
    // Send times (actual or intended) of the messages in flight, in order.
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(cap);
    let mut send_seq = 0u64;
    let mut recv_seq = 0u64;
    let (mut wpos, mut wend) = (0usize, 0usize);
    let mut ctrl: Option<Control> = None;
    let mut ctrl_pos = 0usize;
    let mut flush = false;
    let mut sending = true;
    // Whether the message being received still matches.
    let mut intact = true;
    let mut timer = Alarm::new(w.pacer.as_ref(), plan.end);

    loop {
        let now = Instant::now();
        if sending {
            let over = match &schedule {
                None => now >= plan.end,
                Some(s) => s.next() >= plan.end,
            };
            if over {
                sending = false;
            }
        }
        let writer_free = wpos == wend && ctrl.is_none();
        if sending && writer_free && inflight.len() < cap {
            let room = (cap - inflight.len()).min(out.copies());
            let n = match &mut schedule {
                None => {
                    for _ in 0..room {
                        inflight.push_back(now);
                    }
                    room
                }
                Some(s) => {
                    let mut n = 0;
                    while n < room {
                        let t = s.next();
                        if t > now || t >= plan.end {
                            break;
                        }
                        inflight.push_back(t);
                        s.next += 1;
                        n += 1;
                    }
                    n
                }
            };
            if n > 0 {
                wend = out.stamp(n, send_seq);
                wpos = 0;
                send_seq += n as u64;
            }
        }
        let writer_free = wpos == wend && ctrl.is_none();
        if !sending && inflight.is_empty() && writer_free && !flush {
            return End::Done;
        }
        if !sending && now >= grace_end {
            let missing = inflight.len() as u64;
            w.error(ErrorKind::Timeout, missing.max(1), || {
                format!(
                    "connection {index}: {missing} echo(es) still missing {:?} after the sending stopped",
                    o.timeout
                )
            });
            return End::Failed;
        }
        let deadline = if !sending {
            grace_end
        } else {
            match &schedule {
                Some(s) if writer_free && inflight.len() < cap => s.next().min(plan.end),
                // Waiting for the writer or for echoes: the clock's next
                // say is the end of sending. An open loop can still be
                // sending after that, behind its schedule because the
                // server keeps `cap` echoes waiting: then only the run's
                // hard deadline is left to wait for (an alarm at the
                // passed end would go off at once, again and again).
                _ if now < plan.end => plan.end,
                _ => plan.hard_deadline,
            }
        };
        if timer.deadline() != deadline {
            timer.reset(deadline);
        }
        let pending: &[u8] = if wpos < wend {
            &out.bytes()[wpos..wend]
        } else if let Some(c) = &ctrl {
            &c.bytes()[ctrl_pos..]
        } else {
            &[]
        };
        let io = poll_fn(|cx| poll_io(cx, conn, reader, pending, flush, &mut timer)).await;
        flush = io.flush;
        if let Some(e) = io.failed {
            w.error(ErrorKind::Closed, 1, || {
                format!("connection {index}: writing: {e}")
            });
            return End::Failed;
        }
        if io.wrote > 0 {
            if wpos < wend {
                wpos += io.wrote;
            } else if let Some(c) = &ctrl {
                ctrl_pos += io.wrote;
                if ctrl_pos >= c.bytes().len() {
                    ctrl = None;
                    ctrl_pos = 0;
                }
            }
        }
        let Some(read) = io.read else {
            continue;
        };
        match read {
            Ok(0) => {
                w.error(ErrorKind::Closed, 1, || {
                    format!("connection {index}: the server closed TCP without a close frame")
                });
                return End::Failed;
            }
            Err(e) => {
                w.error(ErrorKind::Closed, 1, || {
                    format!("connection {index}: reading: {e}")
                });
                return End::Failed;
            }
            Ok(_) => {}
        }
        let now = Instant::now();
        let mut done = 0u64;
        let mut stats = w.stats.borrow_mut();
        loop {
            let event = match reader.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => {
                    w.error_in(&mut stats, ErrorKind::Protocol, 1, || {
                        format!("connection {index}: {e}")
                    });
                    return End::Failed;
                }
            };
            match event {
                Event::Data {
                    opcode: got,
                    offset,
                    chunk,
                    last,
                } => {
                    if offset == 0 {
                        intact = got == opcode;
                    }
                    if intact && !expected.matches(recv_seq, offset, chunk) {
                        intact = false;
                    }
                    if !last {
                        continue;
                    }
                    let len = offset + chunk.len() as u64;
                    let seq = recv_seq;
                    recv_seq += 1;
                    let Some(sent) = inflight.pop_front() else {
                        w.error_in(&mut stats, ErrorKind::Mismatch, 1, || {
                            format!("connection {index}: a message arrived that was never sent")
                        });
                        continue;
                    };
                    if !intact || len != size {
                        w.error_in(&mut stats, ErrorKind::Mismatch, 1, || {
                            format!(
                                "connection {index}: the echo of message {seq} differs from what \
                                 was sent ({len} bytes {got:?} back, {size} bytes {opcode:?} sent)"
                            )
                        });
                    } else {
                        done += 1;
                        if plan.in_window(sent) {
                            stats.messages += 1;
                            stats.record(now.saturating_duration_since(sent));
                        }
                    }
                    intact = true;
                }
                Event::Ping(payload) => {
                    // Only the latest ping needs an answer (RFC 6455 §5.5.3).
                    if ctrl.is_none() {
                        ctrl = Some(Control::new(OpCode::Pong, payload, key));
                    }
                }
                Event::Pong(_) => {}
                Event::Close(payload) => {
                    let code = close_code(payload);
                    w.error_in(&mut stats, ErrorKind::Closed, 1, || {
                        format!("connection {index}: the server sent close {code} during the run")
                    });
                    return End::ServerClosed(code);
                }
            }
        }
        drop(stats);
        if done > 0 {
            let p = w.progress();
            Progress::add(&p.done, done);
            Progress::add(&p.bytes, done * size * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_connections_evenly() {
        let origin = Instant::now();
        // 4 connections at 1000 msgs/s: each sends every 4 ms, offset by 1 ms.
        let s0 = Schedule::new(origin, 0, 4, 1000.0);
        let s1 = Schedule::new(origin, 1, 4, 1000.0);
        assert_eq!(s0.at(0), origin);
        assert_eq!(s0.at(1) - origin, Duration::from_millis(4));
        assert_eq!(s1.at(0) - origin, Duration::from_millis(1));
        assert_eq!(s1.at(2) - origin, Duration::from_millis(9));
        let mut s = Schedule::new(origin, 1, 4, 1000.0);
        s.skip_to(origin + Duration::from_micros(5500));
        assert_eq!(s.next() - origin, Duration::from_millis(9));
        let mut s = Schedule::new(origin, 1, 4, 1000.0);
        s.skip_to(origin);
        assert_eq!(s.next, 0);
    }
}
