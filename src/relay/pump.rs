//! One direction of a relay: read from one peer, transform in place, write to
//! the other.
//!
//! A [`Pump`] is polled by hand (no task of its own) so that a session drives
//! both directions from one task and can stop either one at a well-defined
//! point. Bytes are read into a lent [`Chunk`], handed to a [`Transform`]
//! which validates and rewrites them in place and says how much to write out
//! and how much to drop, then written to the other peer before anything more
//! is read. Memory per direction is thus one chunk while busy and none while
//! idle. A direction with nothing to read finds that out from the source's
//! readiness ([`ReadReady`]) before it takes a chunk: a session polls both of
//! its directions whenever either one has traffic.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::buffer::Chunk;
use crate::ws::ProtocolError;

/// Why a direction stopped.
#[derive(Debug)]
pub enum End {
    /// The source closed its sending side (TCP FIN or TLS close_notify).
    Eof,
    /// The source sent a close frame; it has been forwarded. Anything the
    /// source sends after it is ignored (RFC 6455 §5.5.1).
    Close {
        /// The status code in the frame, if it had one.
        code: Option<u16>,
        /// The reason in the frame (may be empty).
        reason: String,
    },
    /// The source broke the protocol; nothing after the offending point was
    /// forwarded.
    Violation(ProtocolError),
    /// Reading from the source failed.
    ReadError(io::Error),
    /// Writing to the destination failed.
    WriteError(io::Error),
}

/// Result of transforming one buffer in place.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Bytes `[..emit]` are to be written to the destination.
    pub emit: usize,
    /// Bytes `[..consume]` are done with (`[emit..consume]` are dropped);
    /// `[consume..]` are kept and presented again with more data.
    pub consume: usize,
    /// Whether the destination stream is at a frame boundary once `[..emit]`
    /// is written, i.e. whether a frame of our own may be injected there.
    pub boundary: bool,
}

/// What a direction does to the bytes it relays.
pub trait Transform {
    /// Processes `buf` in place. May also report why the direction must stop
    /// (after `[..emit]` has been written).
    fn process(&mut self, buf: &mut [u8]) -> (Step, Option<End>);
}

/// A byte source that can tell, without being read, that a read would
/// block.
///
/// Whenever one direction of a session has traffic, the session polls both,
/// and the quiet one would otherwise take a chunk from the free list just to
/// see its read return `Pending` and give the chunk back (a tenth of the
/// user-space instructions per relayed 64 B message).
pub trait ReadReady {
    /// `Ready` when a read may make progress (data, end of stream or an
    /// error); `Pending`, with the task's waker registered, when a read
    /// would block. `Ready` is always correct, just slower.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// One relay direction: its transform, lent buffer and write progress.
#[derive(Debug)]
pub struct Pump<T> {
    /// The transform (frame validator or raw copy), with its counters.
    pub codec: T,
    /// The lent chunk, present only while bytes are in flight.
    buf: Option<Chunk>,
    /// Bytes received before the relay started (read ahead by the HTTP layer).
    prefix: Bytes,
    /// Bytes of the buffer that have been read.
    filled: usize,
    /// Output `[written..emit]` is still to be written.
    written: usize,
    /// End of the output region.
    emit: usize,
    /// End of the region to drop once the output is written.
    consume: usize,
    /// Whether the destination is at a frame boundary after the output.
    boundary: bool,
    /// Data was written since the last flush.
    needs_flush: bool,
    /// Why the direction stops, reported once the output is written.
    pending_end: Option<End>,
    /// A read filled all the room in the buffer since
    /// [`Pump::take_filled_buffer`] last asked.
    filled_buffer: bool,
    /// Bytes written to the destination.
    pub bytes_out: u64,
}

impl<T: Transform> Pump<T> {
    /// A pump that first relays `prefix`, then reads from its source.
    pub fn new(codec: T, prefix: Bytes) -> Self {
        Pump {
            codec,
            buf: None,
            // An empty `Bytes` split off a larger buffer would keep that whole
            // buffer alive for the session.
            prefix: if prefix.is_empty() {
                Bytes::new()
            } else {
                prefix
            },
            filled: 0,
            written: 0,
            emit: 0,
            consume: 0,
            boundary: true,
            needs_flush: false,
            pending_end: None,
            filled_buffer: false,
            bytes_out: 0,
        }
    }

    /// Whether everything produced so far has been written and the
    /// destination sits at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.written == self.emit && !self.needs_flush && self.boundary
    }

    /// Whether nothing is in flight: no buffer is held and the prefix is
    /// written.
    pub fn is_idle(&self) -> bool {
        self.buf.is_none() && !self.prefix.has_remaining()
    }

    /// Whether a read since the last call filled all the room in the
    /// buffer, i.e. more data was waiting than one read could take.
    pub fn take_filled_buffer(&mut self) -> bool {
        std::mem::take(&mut self.filled_buffer)
    }

    /// Relays from `src` to `dst` until the direction ends.
    pub fn poll_relay<S, D>(&mut self, cx: &mut Context<'_>, src: &mut S, dst: &mut D) -> Poll<End>
    where
        S: AsyncRead + ReadReady + Unpin + ?Sized,
        D: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if let Err(e) = ready!(self.poll_write_out(cx, dst)) {
                return Poll::Ready(End::WriteError(e));
            }
            if let Some(end) = self.pending_end.take() {
                return Poll::Ready(end);
            }
            self.compact();
            if self.buf.is_none() && !self.prefix.has_remaining() {
                if let Err(e) = ready!(src.poll_read_ready(cx)) {
                    return Poll::Ready(End::ReadError(e));
                }
            }
            let buf = self.buf.get_or_insert_with(Chunk::take);
            let n = if self.prefix.has_remaining() {
                let n = self.prefix.len().min(buf.len() - self.filled);
                buf[self.filled..self.filled + n].copy_from_slice(&self.prefix[..n]);
                self.prefix.advance(n);
                if self.prefix.is_empty() {
                    self.prefix = Bytes::new();
                }
                n
            } else {
                let mut read = ReadBuf::new(&mut buf[self.filled..]);
                match Pin::new(&mut *src).poll_read(cx, &mut read) {
                    Poll::Pending => {
                        if self.filled == 0 {
                            // Idle: give the chunk back while waiting.
                            self.buf = None;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(End::ReadError(e)),
                    Poll::Ready(Ok(())) => {
                        self.filled_buffer |= read.remaining() == 0;
                        read.filled().len()
                    }
                }
            };
            if n == 0 {
                return Poll::Ready(End::Eof);
            }
            self.filled += n;
            let (step, end) = self.codec.process(&mut buf[..self.filled]);
            self.written = 0;
            self.emit = step.emit;
            self.consume = step.consume;
            self.boundary = step.boundary;
            self.pending_end = end;
        }
    }

    /// Writes (and flushes) whatever output is pending, without reading.
    pub fn poll_write_out<D>(&mut self, cx: &mut Context<'_>, dst: &mut D) -> Poll<io::Result<()>>
    where
        D: AsyncWrite + Unpin + ?Sized,
    {
        if let Some(buf) = &self.buf {
            while self.written < self.emit {
                let n = ready!(Pin::new(&mut *dst).poll_write(cx, &buf[self.written..self.emit]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
                self.bytes_out += n as u64;
                self.needs_flush = true;
            }
        }
        if self.needs_flush {
            ready!(Pin::new(&mut *dst).poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Drops written and discarded bytes, keeps the carried tail at the start
    /// of the buffer, and gives the buffer back if nothing is carried.
    fn compact(&mut self) {
        if let Some(buf) = self.buf.as_mut() {
            if self.consume > 0 {
                buf.copy_within(self.consume..self.filled, 0);
                self.filled -= self.consume;
            }
            self.consume = 0;
            self.emit = 0;
            self.written = 0;
            if self.filled == 0 {
                self.buf = None;
            }
        }
    }
}
