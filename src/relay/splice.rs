//! Tunnel directions, with zero-copy bulk between plain TCP sockets:
//! splice(2).
//!
//! A tunnel over plain TCP on both sides has no reason to bring bulk data
//! into user space. A direction that carries large amounts moves them with
//! two `splice` calls, from the source socket into a pipe and from the pipe
//! into the destination socket, so the kernel passes page references instead
//! of copying the payload out and back in. Small messages are cheaper to
//! copy (a splice of 64 bytes still takes a page reference and two pipe
//! operations), so each direction starts as an ordinary copying [`Pump`] and
//! switches to splicing while the data waiting at once is large, and back
//! while it is small. It switches only when nothing is in flight, so no byte
//! is lost or reordered.
//!
//! A pipe is held only while bytes are in it: it comes from a small
//! per-thread pool just before the first splice and goes back as soon as it
//! is empty again, so an idle tunnel holds no pipe and no extra
//! descriptors. A pipe that still holds bytes when its session ends is
//! closed, never pooled. If no pipe can be opened (the process is out of
//! descriptors), or a stream is not a bare socket (TLS in between), the
//! direction copies from then on.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::unistd::pipe2;
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::TcpStream;

use super::pump::{End, Pump, ReadReady};
use super::tunnel::Raw;

/// A splicing direction that moves less than this at once goes back to
/// copying. (The measurements behind the switch are in [`SplicePump`].)
const COPY_BELOW: usize = 4 * 1024;

/// What a pipe is asked to hold: sixteen times the default, so that one
/// splice moves up to a mebibyte (the default `/proc/sys/fs/pipe-max-size`).
/// The pages are the socket's own, passed by reference; a pipe that cannot
/// be enlarged keeps its default size and works as well, in more calls.
const PIPE_CAPACITY: usize = 1 << 20;

/// How many empty pipes a worker thread keeps for reuse (two descriptors
/// each).
const MAX_FREE_PIPES: usize = 16;

thread_local! {
    /// This thread's empty pipes.
    static FREE_PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A stream that may be a bare TCP socket, which a tunnel can splice.
///
/// The relay is generic over its streams; this is how it learns that both
/// ends of a tunnel are plain sockets (no TLS in between) without knowing
/// their types.
pub trait BareTcp {
    /// The socket, if the stream is one with nothing layered on it.
    fn bare_tcp(&mut self) -> Option<&mut TcpStream>;
}

impl BareTcp for TcpStream {
    fn bare_tcp(&mut self) -> Option<&mut TcpStream> {
        Some(self)
    }
}

/// Both ends of a kernel pipe, non-blocking.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// An empty pipe from this thread's pool, or a new one.
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = FREE_PIPES.with(|free| free.borrow_mut().pop()) {
            return Ok(pipe);
        }
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // Beyond the system's or the user's pipe limits the pipe simply
        // stays at its default size.
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY as i32));
        Ok(Pipe { read, write })
    }

    /// Returns an empty pipe to this thread's pool (or closes it when the
    /// pool is full).
    fn recycle(self) {
        // A thread-local may already be gone at thread exit: then just close.
        let _ = FREE_PIPES.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < MAX_FREE_PIPES {
                free.push(self);
            }
        });
    }
}

/// How many empty pipes this thread holds for reuse.
pub fn pooled_pipes() -> usize {
    FREE_PIPES.with(|free| free.borrow().len())
}

/// How a [`SplicePump`] moves bytes at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Through the copying pump (small traffic, and always at the start).
    Copy,
    /// Through a pipe (bulk traffic).
    Splice,
    /// Through the copying pump for good: a stream is not a bare socket,
    /// or no pipe could be opened.
    CopyOnly,
}

/// One tunnel direction: copies small traffic, and splices bulk where both
/// streams are plain sockets.
///
/// A copying direction one of whose reads fills its chunk has more data
/// waiting than it can copy at once: it splices from then on, until a
/// splice moves less than [`COPY_BELOW`]. Measured side by side
/// (`benches/compare/compare.sh`, 64 KiB echo, two runs of two rounds
/// each, alternating with the build that only copies), splicing took
/// 29.0-29.9 µs of proxy CPU per message against 30.8-32.8 µs for
/// copying. 64 B echoes, which stay on the copying path, were unchanged
/// (6.5-6.6 against 6.5-7.5 µs); splicing every message cost 7.1-7.3 µs
/// there.
#[derive(Debug)]
pub struct SplicePump {
    /// The copying pump, which also writes the prefix.
    copy: Pump<Raw>,
    /// Which way bytes go now.
    mode: Mode,
    /// The pipe, present only while bytes are in it.
    pipe: Option<FilledPipe>,
}

/// A pipe that holds bytes still to be written to the destination.
#[derive(Debug)]
struct FilledPipe {
    pipe: Pipe,
    /// How many: more than zero, at most [`PIPE_CAPACITY`].
    len: u32,
}

impl SplicePump {
    /// A direction that first writes `prefix`, then relays from its source.
    pub fn new(prefix: Bytes) -> Self {
        SplicePump {
            copy: Pump::new(Raw, prefix),
            mode: Mode::Copy,
            pipe: None,
        }
    }

    /// Bytes written to the destination so far, copied or spliced.
    pub fn bytes_out(&self) -> u64 {
        self.copy.bytes_out
    }

    /// Relays from `src` to `dst` until the direction ends: [`End::Eof`],
    /// [`End::ReadError`] or [`End::WriteError`]. Bulk is spliced only when
    /// both streams are bare sockets; otherwise everything is copied.
    pub fn poll_relay<S, D>(&mut self, cx: &mut Context<'_>, src: &mut S, dst: &mut D) -> Poll<End>
    where
        S: AsyncRead + ReadReady + BareTcp + Unpin + ?Sized,
        D: AsyncWrite + BareTcp + Unpin + ?Sized,
    {
        loop {
            // Bytes left in the pipe by the last splice go out before
            // anything else, even once the direction is back to copying.
            if self.mode == Mode::Splice || self.pipe.is_some() {
                if let (Some(src), Some(dst)) = (src.bare_tcp(), dst.bare_tcp()) {
                    if let Some(end) = ready!(self.poll_splice(cx, src, dst)) {
                        return Poll::Ready(end);
                    }
                    // Back to copying: small traffic, or no pipe to be had.
                } else {
                    // TLS in between: its records must pass through rustls.
                    self.mode = Mode::CopyOnly;
                }
            }
            if let Poll::Ready(end) = self.copy.poll_relay(cx, src, dst) {
                return Poll::Ready(end);
            }
            // Waiting, with nothing in flight, after a read that filled the
            // whole chunk: bulk, which is spliced from here on.
            let bulk =
                self.mode == Mode::Copy && self.copy.is_idle() && self.copy.take_filled_buffer();
            if !bulk {
                return Poll::Pending;
            }
            self.mode = Mode::Splice;
        }
    }

    /// Splices until the direction ends (`Some`), waits, or goes back to
    /// copying (`None`, with the pipe empty and returned).
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
    ) -> Poll<Option<End>> {
        loop {
            if let Err(e) = ready!(self.poll_drain(cx, dst)) {
                return Poll::Ready(Some(End::WriteError(e)));
            }
            if self.mode != Mode::Splice {
                return Poll::Ready(None);
            }
            if let Err(e) = ready!(src.poll_read_ready(cx)) {
                return Poll::Ready(Some(End::ReadError(e)));
            }
            let pipe = match Pipe::take() {
                Ok(pipe) => pipe,
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe for splice; copying instead");
                    self.mode = Mode::CopyOnly;
                    return Poll::Ready(None);
                }
            };
            let filled = src.try_io(Interest::READABLE, || {
                // The pipe is empty, so EAGAIN can only mean that the socket
                // has nothing to read.
                Ok(splice(
                    src.as_fd(),
                    None,
                    pipe.write.as_fd(),
                    None,
                    PIPE_CAPACITY,
                    flags(),
                )?)
            });
            match filled {
                Ok(0) => {
                    pipe.recycle();
                    return Poll::Ready(Some(End::Eof));
                }
                Ok(n) => {
                    // At most the `PIPE_CAPACITY` asked for.
                    let len = n as u32;
                    self.pipe = Some(FilledPipe { pipe, len });
                    if n < COPY_BELOW {
                        // Written out first, then copying resumes.
                        self.mode = Mode::Copy;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => pipe.recycle(),
                Err(e) => {
                    pipe.recycle();
                    return Poll::Ready(Some(End::ReadError(e)));
                }
            }
        }
    }

    /// Splices the pipe's contents into `dst`, then gives the pipe back.
    fn poll_drain(&mut self, cx: &mut Context<'_>, dst: &TcpStream) -> Poll<io::Result<()>> {
        let Some(filled) = &mut self.pipe else {
            return Poll::Ready(Ok(()));
        };
        while filled.len > 0 {
            ready!(dst.poll_write_ready(cx))?;
            let (pipe, len) = (&filled.pipe, filled.len as usize);
            let drained = dst.try_io(Interest::WRITABLE, || {
                // The pipe is not empty, so EAGAIN can only mean that the
                // socket's send buffer is full.
                Ok(splice(
                    pipe.read.as_fd(),
                    None,
                    dst.as_fd(),
                    None,
                    len,
                    flags(),
                )?)
            });
            match drained {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    // `n` is at most `len`.
                    filled.len -= n as u32;
                    self.copy.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if let Some(filled) = self.pipe.take() {
            filled.pipe.recycle();
        }
        Poll::Ready(Ok(()))
    }
}

/// Neither end of a splice may block; pages are moved where the kernel can.
fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::relay::tunnel;
    use crate::relay::ClosedBy;

    /// A connected pair of sockets on 127.0.0.1.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap());
        let (near, accepted) = tokio::join!(near, listener.accept());
        (near.unwrap(), accepted.unwrap().0)
    }

    /// A connected pair whose buffers towards `far` are as small as the
    /// kernel allows, so that writes to `near` often find them full.
    async fn narrow_socket_pair() -> (TcpStream, TcpStream) {
        let listening = tokio::net::TcpSocket::new_v4().unwrap();
        listening.set_recv_buffer_size(4096).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let connecting = tokio::net::TcpSocket::new_v4().unwrap();
        connecting.set_send_buffer_size(4096).unwrap();
        let near = connecting.connect(listener.local_addr().unwrap());
        let (near, accepted) = tokio::join!(near, listener.accept());
        (near.unwrap(), accepted.unwrap().0)
    }

    /// Runs a tunnel with no prefixes between the proxy's two sockets.
    fn spawn_tunnel(
        mut client: TcpStream,
        mut backend: TcpStream,
    ) -> tokio::task::JoinHandle<crate::relay::Outcome> {
        tokio::spawn(async move {
            tunnel::relay(&mut client, Bytes::new(), &mut backend, Bytes::new()).await
        })
    }

    /// Four mebibytes that are easy to check.
    fn payload(seed: u32) -> Vec<u8> {
        (0..4 << 20)
            .map(|i: u32| (i.wrapping_mul(seed) >> 7) as u8)
            .collect()
    }

    /// A tunnel between two plain sockets goes through pipes (which are
    /// back in the pool, empty, at the end) and relays megabytes both ways
    /// at once, prefixes first, with each half-close mirrored.
    #[tokio::test]
    async fn plain_tunnels_splice_both_ways_and_mirror_half_closes() {
        let (mut client, mut proxy_client) = socket_pair().await;
        let (mut proxy_backend, mut backend) = socket_pair().await;
        assert_eq!(pooled_pipes(), 0);
        let relay = tokio::spawn(async move {
            let outcome = tunnel::relay(
                &mut proxy_client,
                Bytes::from_static(b"early-from-client:"),
                &mut proxy_backend,
                Bytes::from_static(b"early-from-backend:"),
            )
            .await;
            (outcome, pooled_pipes())
        });
        let (up, down) = (payload(31), payload(17));
        let (up_sent, down_sent) = (up.clone(), down.clone());
        let client_side = async move {
            let (mut read, mut write) = client.split();
            let send = async {
                write.write_all(&up_sent).await.unwrap();
                write.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let receive = read.read_to_end(&mut got);
            let (_, received) = tokio::join!(send, receive);
            received.unwrap();
            got
        };
        let backend_side = async move {
            let (mut read, mut write) = backend.split();
            let mut got = Vec::new();
            // The backend answers only after the client's half-close has
            // reached it: the other direction must stay open until then.
            read.read_to_end(&mut got).await.unwrap();
            write.write_all(&down_sent).await.unwrap();
            write.shutdown().await.unwrap();
            got
        };
        let (at_client, at_backend) = tokio::join!(client_side, backend_side);
        assert_eq!(&at_backend[..18], b"early-from-client:");
        assert!(at_backend[18..] == up[..], "client bytes arrived intact");
        assert_eq!(&at_client[..19], b"early-from-backend:");
        assert!(at_client[19..] == down[..], "backend bytes arrived intact");
        let (outcome, pooled) = relay.await.unwrap();
        assert_eq!(outcome.closed_by, ClosedBy::Client);
        assert_eq!(outcome.client_to_backend.bytes, 18 + up.len() as u64);
        assert_eq!(outcome.backend_to_client.bytes, 19 + down.len() as u64);
        assert!(pooled >= 1, "the relay used (and returned) a pipe");
    }

    /// Request and response of a hundred bytes never fill a chunk: they are
    /// copied, and no pipe is ever opened.
    #[tokio::test]
    async fn small_messages_are_copied_not_spliced() {
        let (mut client, mut proxy_client) = socket_pair().await;
        let (mut proxy_backend, mut backend) = socket_pair().await;
        let relay = tokio::spawn(async move {
            let outcome = tunnel::relay(
                &mut proxy_client,
                Bytes::new(),
                &mut proxy_backend,
                Bytes::new(),
            )
            .await;
            (outcome, pooled_pipes())
        });
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 100];
            while backend.read_exact(&mut buf).await.is_ok() {
                backend.write_all(&buf).await.unwrap();
            }
        });
        for round in 0..200u8 {
            let request = [round; 100];
            client.write_all(&request).await.unwrap();
            let mut response = [0u8; 100];
            client.read_exact(&mut response).await.unwrap();
            assert_eq!(response, request);
        }
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        let (outcome, pooled) = relay.await.unwrap();
        echo.await.unwrap();
        assert_eq!(outcome.client_to_backend.bytes, 20_000);
        assert_eq!(outcome.backend_to_client.bytes, 20_000);
        assert_eq!(pooled, 0, "no pipe was opened for small messages");
    }

    /// Bulk and small writes alternate while the destination, with the
    /// smallest buffers the kernel allows, reads slowly: the direction keeps
    /// switching between splicing and copying, and every byte still
    /// arrives, in order.
    #[tokio::test]
    async fn alternating_bulk_and_small_writes_arrive_in_order() {
        let (mut client, proxy_client) = socket_pair().await;
        let (proxy_backend, mut backend) = narrow_socket_pair().await;
        let relay = spawn_tunnel(proxy_client, proxy_backend);
        let stream: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
        let sent = stream.clone();
        let writer = tokio::spawn(async move {
            let sizes = [200 << 10, 100, 3000, 70 << 10, 1, 2000, 1 << 20, 500];
            let (mut at, mut turn) = (0, 0);
            while at < sent.len() {
                let end = (at + sizes[turn % sizes.len()]).min(sent.len());
                client.write_all(&sent[at..end]).await.unwrap();
                if end - at < 4096 {
                    // Let the proxy find only this piece in the socket.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                at = end;
                turn += 1;
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut received = Vec::with_capacity(stream.len());
        let mut piece = vec![0u8; 1500];
        loop {
            let n = backend.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&piece[..n]);
            // Read slowly now and then, so the proxy's writes back up.
            if received.len() % 5 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        drop(backend);
        let _client = writer.await.unwrap();
        relay.await.unwrap();
        assert_eq!(received.len(), stream.len());
        let first_difference = received.iter().zip(&stream).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "bytes arrived out of order");
    }

    /// Polls a direction once, the way its session task would.
    async fn poll_once(pump: &mut SplicePump, src: &mut TcpStream, dst: &mut TcpStream) {
        let polled = std::future::poll_fn(|cx| Poll::Ready(pump.poll_relay(cx, src, dst))).await;
        assert!(polled.is_pending(), "the direction ended: {polled:?}");
        // Let the reactor see what changed on the sockets.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    /// A splice small enough to go back to copying, whose bytes cannot all
    /// be written yet, still reaches the destination before whatever the
    /// copying path reads next.
    #[tokio::test]
    async fn bytes_left_in_the_pipe_go_out_before_copied_ones() {
        let (mut client, mut proxy_client) = socket_pair().await;
        let (mut proxy_backend, mut backend) = narrow_socket_pair().await;
        let mut pump = SplicePump::new(Bytes::new());
        pump.mode = Mode::Splice;
        // Fill the way to the backend.
        let mut filler = 0;
        loop {
            match proxy_backend.try_write(&[0u8; 4096]) {
                Ok(n) => filler += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the backend: {e}"),
            }
        }
        client.write_all(&[b'B'; 100]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        poll_once(&mut pump, &mut proxy_client, &mut proxy_backend).await;
        assert!(pump.pipe.is_some(), "the first piece waits in the pipe");
        assert_eq!(pump.mode, Mode::Copy, "a small splice goes back to copying");

        client.write_all(&[b'C'; 100]).await.unwrap();
        let mut drained = vec![0u8; filler];
        backend.read_exact(&mut drained).await.unwrap();

        // Keep polling, as the session task would on each wake-up, until
        // both pieces are through (or for five seconds).
        let mut relayed = Vec::new();
        for _ in 0..250 {
            poll_once(&mut pump, &mut proxy_client, &mut proxy_backend).await;
            let mut piece = [0u8; 256];
            while let Ok(n @ 1..) = backend.try_read(&mut piece) {
                relayed.extend_from_slice(&piece[..n]);
            }
            if relayed.len() >= 200 {
                break;
            }
        }
        let expected: Vec<u8> = [[b'B'; 100], [b'C'; 100]].concat();
        assert_eq!(
            &relayed[..],
            &expected[..],
            "the pieces arrived out of order"
        );
        assert!(pump.pipe.is_none(), "the empty pipe went back to the pool");
    }

    /// A spliced direction whose destination is gone fails the tunnel
    /// instead of spinning on the pipe.
    #[tokio::test]
    async fn a_vanished_destination_ends_the_tunnel() {
        let (mut client, proxy_client) = socket_pair().await;
        let (proxy_backend, backend) = socket_pair().await;
        // Closing with unread data makes the kernel reset the connection.
        backend.set_zero_linger().unwrap();
        drop(backend);
        let relay = spawn_tunnel(proxy_client, proxy_backend);
        let chunk = vec![7u8; 1 << 20];
        // Keep writing until the proxy gives up on the connection.
        for _ in 0..64 {
            if client.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let outcome = relay.await.unwrap();
        assert!(
            matches!(
                outcome.closed_by,
                ClosedBy::BackendVanished | ClosedBy::ClientVanished
            ),
            "{outcome:?}"
        );
    }
}
