//! One client connection: connect (bound to a source address), TLS, the
//! opening handshake, frames out and frames in, and the closing handshake.
//!
//! Built on wsgate's own protocol code and made for the hot loop: outgoing
//! messages are masked once into a per-connection buffer ([`Outgoing`]) and
//! only their sequence number is rewritten per message; incoming frames are
//! parsed in place from one reusable buffer ([`FrameReader`]) and handed out
//! as borrowed [`Event`]s, so a message costs no allocation either way.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use rustls_pki_types::ServerName;

use crate::upstream;
use crate::ws::close::{encode_close_frame, MAX_CLOSE_FRAME_LEN, NORMAL, NO_STATUS};
use crate::ws::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::ws::handshake::{accept_key, generate_key};
use crate::ws::mask::{apply_mask, random_key};
use crate::ws::ProtocolError;

use super::error::ErrorKind;
use super::target::Target;

/// A counted failure: its kind and a sentence about it.
pub(crate) type Failure = (ErrorKind, String);

/// The largest opening-handshake response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// How long to wait for the server to close TCP after the closing
/// handshake (RFC 6455 §7.1.1: the server closes first) before closing it
/// ourselves.
const EOF_WAIT: Duration = Duration::from_secs(2);

/// A client connection, plain or TLS.
#[derive(Debug)]
pub(crate) enum Conn {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Everything needed to open a connection, prepared once per run.
#[derive(Debug)]
pub(crate) struct Opener {
    /// The target's address.
    pub addr: SocketAddr,
    /// The TLS configuration and server name, for `wss://`.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Source addresses to bind to; empty means let the OS choose.
    pub sources: Vec<IpAddr>,
    /// The request up to the key, and after it.
    pub request: (String, String),
    /// The limit for the TCP connect, and then for TLS plus the upgrade.
    pub timeout: Duration,
}

impl Opener {
    /// Prepares connections to `target` at `addr`.
    pub fn new(
        target: &Target,
        addr: SocketAddr,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        sources: Vec<IpAddr>,
        timeout: Duration,
    ) -> Opener {
        Opener {
            addr,
            tls,
            sources,
            request: target.request_parts(),
            timeout,
        }
    }

    /// Connects connection number `index` (which picks its source address),
    /// completes TLS and the opening handshake, and leaves any bytes that
    /// followed the 101 in `reader`.
    pub async fn open(&self, index: usize, reader: &mut FrameReader) -> Result<Conn, Failure> {
        reader.reset();
        let connect = |e: io::Error| (ErrorKind::Connect, format!("{}: {e}", self.addr));
        let socket = if self.sources.is_empty() {
            if self.addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(connect)?
        } else {
            // Bound like the proxy's backend connections: the port is left to
            // connect, so the bench's sockets do not take ports away from the
            // proxy's (on one host, a port reserved by bind is one that no
            // connect may use, whatever the address).
            let source = self.sources[index % self.sources.len()];
            upstream::bind_source(source)
                .map_err(|e| (ErrorKind::Connect, format!("bind to {source}: {e}")))?
        };
        let tcp = match timeout(self.timeout, socket.connect(self.addr)).await {
            Ok(r) => r.map_err(connect)?,
            Err(_) => {
                return Err((
                    ErrorKind::Connect,
                    format!("{}: no connection within {:?}", self.addr, self.timeout),
                ))
            }
        };
        let _ = tcp.set_nodelay(true);
        let deadline = Instant::now() + self.timeout;
        let handshake = async {
            let mut conn = match &self.tls {
                None => Conn::Plain(tcp),
                Some((config, name)) => Conn::Tls(Box::new(
                    TlsConnector::from(config.clone())
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| (ErrorKind::Handshake, format!("TLS: {e}")))?,
                )),
            };
            self.upgrade(&mut conn, reader).await?;
            Ok(conn)
        };
        match timeout_at(deadline, handshake).await {
            Ok(r) => r,
            Err(_) => Err((
                ErrorKind::Handshake,
                format!("no handshake within {:?}", self.timeout),
            )),
        }
    }

    /// Sends the upgrade request and checks the 101.
    async fn upgrade(&self, conn: &mut Conn, reader: &mut FrameReader) -> Result<(), Failure> {
        let fail = |reason: String| (ErrorKind::Handshake, reason);
        let key = generate_key();
        let mut request =
            Vec::with_capacity(self.request.0.len() + key.len() + self.request.1.len());
        request.extend_from_slice(self.request.0.as_bytes());
        request.extend_from_slice(key.as_bytes());
        request.extend_from_slice(self.request.1.as_bytes());
        conn.write_all(&request)
            .await
            .map_err(|e| fail(format!("sending the upgrade request: {e}")))?;
        conn.flush()
            .await
            .map_err(|e| fail(format!("sending the upgrade request: {e}")))?;

        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let end = loop {
            if let Some(pos) = find_head_end(&head) {
                break pos;
            }
            if head.len() > MAX_RESPONSE_HEAD {
                return Err(fail(format!(
                    "the response head is larger than {MAX_RESPONSE_HEAD} bytes"
                )));
            }
            let n = conn
                .read(&mut chunk)
                .await
                .map_err(|e| fail(format!("reading the response: {e}")))?;
            if n == 0 {
                return Err(fail(
                    "the server closed the connection before answering the upgrade".into(),
                ));
            }
            head.extend_from_slice(&chunk[..n]);
        };
        check_response(&head[..end], &key).map_err(fail)?;
        if !reader.preload(&head[end..]) {
            return Err(fail("too many bytes right after the 101".into()));
        }
        Ok(())
    }
}

/// The index just past the `\r\n\r\n` that ends a response head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Checks a server's answer to the upgrade request (RFC 6455 §4.1): status
/// 101, `Upgrade: websocket`, `Connection: upgrade`, the accept key for
/// `key`, and no extension or subprotocol, since none was offered.
pub(crate) fn check_response(head: &[u8], key: &str) -> Result<(), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete response head".into()),
        Err(e) => return Err(format!("malformed response: {e}")),
    }
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return Err(format!(
            "the server answered {code} {} instead of 101",
            response.reason.unwrap_or("")
        ));
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut accept = None;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= value.eq_ignore_ascii_case("websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = Some(value);
        } else if h.name.eq_ignore_ascii_case("sec-websocket-extensions") {
            return Err(format!(
                "the server chose extensions {value:?}, none offered"
            ));
        } else if h.name.eq_ignore_ascii_case("sec-websocket-protocol") {
            return Err(format!(
                "the server chose subprotocol {value:?}, none offered"
            ));
        }
    }
    if !upgrade {
        return Err("the 101 has no Upgrade: websocket".into());
    }
    if !connection {
        return Err("the 101 has no Connection: upgrade".into());
    }
    match accept {
        None => Err("the 101 has no Sec-WebSocket-Accept".into()),
        Some(a) if a != accept_key(key.as_bytes()) => {
            Err(format!("wrong Sec-WebSocket-Accept {a:?}"))
        }
        Some(_) => Ok(()),
    }
}

/// A frame, or part of one, received from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// Payload bytes of a text or binary message, in order.
    Data {
        /// The message's type.
        opcode: OpCode,
        /// Where `chunk` starts within the message.
        offset: u64,
        /// The bytes (possibly empty for an empty message).
        chunk: &'a [u8],
        /// Whether this chunk ends the message.
        last: bool,
    },
    /// A ping, with its payload.
    Ping(&'a [u8]),
    /// A pong, with its payload.
    Pong(&'a [u8]),
    /// A close frame, with its payload (code and reason).
    Close(&'a [u8]),
}

/// Parses the server's frames in place from one reusable buffer.
///
/// Data payloads are streamed out in whatever pieces are buffered, so the
/// buffer bounds memory whatever the message size; a control frame is
/// handed out once it is whole (it is at most 139 bytes long). Server
/// frames must be unmasked and use no RSV bit.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Payload bytes still to come in the current data frame.
    remaining: u64,
    /// Whether we are inside a data frame's payload.
    in_frame: bool,
    /// The current data frame's FIN bit.
    fin: bool,
    /// The message in progress, if any.
    message: Option<OpCode>,
    /// Bytes of the message in progress handed out so far.
    offset: u64,
}

impl FrameReader {
    /// The smallest buffer: a whole control frame always fits.
    pub const MIN_BUFFER: usize = 256;

    /// A reader with a buffer of `size` bytes (at least [`Self::MIN_BUFFER`]).
    pub fn new(size: usize) -> FrameReader {
        FrameReader {
            buf: vec![0; size.max(Self::MIN_BUFFER)].into_boxed_slice(),
            start: 0,
            end: 0,
            remaining: 0,
            in_frame: false,
            fin: false,
            message: None,
            offset: 0,
        }
    }

    /// Forgets everything, for the next connection.
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.remaining = 0;
        self.in_frame = false;
        self.fin = false;
        self.message = None;
        self.offset = 0;
    }

    /// Puts bytes that were read before framing began into the buffer;
    /// false if they do not fit.
    pub fn preload(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.buf.len() {
            return false;
        }
        self.buf[..bytes.len()].copy_from_slice(bytes);
        self.start = 0;
        self.end = bytes.len();
        true
    }

    /// Reads more bytes from `io` into the buffer. `Ready(Ok(0))` is EOF.
    pub fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        match Pin::new(io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.end += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads more bytes; `Ok(0)` is EOF.
    pub async fn fill<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx, io)).await
    }

    /// The next event from the buffered bytes, or `Ok(None)` if more bytes
    /// must be read first.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, ProtocolError> {
        loop {
            if self.in_frame {
                let avail = (self.end - self.start) as u64;
                let take = self.remaining.min(avail);
                if take == 0 && self.remaining > 0 {
                    return Ok(None);
                }
                // `take` is at most the buffered length, a usize.
                let take = take as usize;
                let from = self.start;
                self.start += take;
                self.remaining -= take as u64;
                let offset = self.offset;
                self.offset += take as u64;
                let last = self.remaining == 0 && self.fin;
                if self.remaining == 0 {
                    self.in_frame = false;
                }
                let Some(opcode) = self.message else {
                    continue;
                };
                if last {
                    self.message = None;
                }
                if take == 0 && !last {
                    continue;
                }
                return Ok(Some(Event::Data {
                    opcode,
                    offset,
                    chunk: &self.buf[from..from + take],
                    last,
                }));
            }
            let Some((header, header_len)) = FrameHeader::parse(&self.buf[self.start..self.end])?
            else {
                return Ok(None);
            };
            if header.mask.is_some() {
                return Err(ProtocolError::MaskedFrame);
            }
            if header.rsv != 0 {
                return Err(ProtocolError::ReservedBits(header.rsv));
            }
            if header.opcode.is_control() {
                // At most 125 by the parser's check.
                let total = header_len + header.payload_len as usize;
                if self.end - self.start < total {
                    return Ok(None);
                }
                let payload = self.start + header_len..self.start + total;
                self.start += total;
                let payload = &self.buf[payload];
                return Ok(Some(match header.opcode {
                    OpCode::Ping => Event::Ping(payload),
                    OpCode::Pong => Event::Pong(payload),
                    _ => Event::Close(payload),
                }));
            }
            match (header.opcode, self.message) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Continuation, Some(_)) => {}
                (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
                (opcode, None) => {
                    self.message = Some(opcode);
                    self.offset = 0;
                }
            }
            self.start += header_len;
            self.in_frame = true;
            self.remaining = header.payload_len;
            self.fin = header.fin;
        }
    }
}

/// The 8 ASCII hex digits of a sequence number (its low 32 bits) that lead
/// every message of at least 8 bytes, so that lost, repeated or reordered
/// echoes do not compare equal. ASCII keeps text messages valid UTF-8.
#[inline]
pub(crate) fn seq_tag(seq: u64) -> [u8; 8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 8];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((seq >> (28 - 4 * i)) & 0xF) as usize];
    }
    out
}

/// The payload every message of connection `index` carries (before its
/// sequence tag): pseudo-random bytes, or lowercase letters for text, so
/// that echoes from another connection or of another size do not match.
pub(crate) fn payload_template(size: usize, text: bool, index: usize) -> Box<[u8]> {
    let mut x = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if text {
                b'a' + (x % 26) as u8
            } else {
                (x >> 24) as u8
            }
        })
        .collect()
}

/// What an echo must look like: the template with the message's sequence
/// tag in front.
#[derive(Debug)]
pub(crate) struct Expected {
    template: Box<[u8]>,
}

impl Expected {
    /// Expects `template` (tagged when it is at least 8 bytes long).
    pub fn new(template: Box<[u8]>) -> Expected {
        Expected { template }
    }

    /// The message length.
    pub fn len(&self) -> usize {
        self.template.len()
    }

    /// Whether `chunk`, found at `offset` in the echo of message `seq`, is
    /// what was sent there.
    #[inline]
    pub fn matches(&self, seq: u64, offset: u64, chunk: &[u8]) -> bool {
        let Ok(offset) = usize::try_from(offset) else {
            return false;
        };
        let Some(want) = offset
            .checked_add(chunk.len())
            .and_then(|end| self.template.get(offset..end))
        else {
            return false;
        };
        if self.template.len() >= 8 && offset < 8 {
            let split = (8 - offset).min(chunk.len());
            let tag = seq_tag(seq);
            chunk[..split] == tag[offset..offset + split] && chunk[split..] == want[split..]
        } else {
            chunk == want
        }
    }
}

/// A connection's outgoing messages, masked once: `copies` complete frames
/// back to back, of which the first `n` are sent in one write after
/// [`stamp`](Self::stamp) has put their sequence tags in.
///
/// Every message of a connection uses the same mask key, chosen at random
/// per connection; rewriting the 8 tag bytes is the only per-message work.
#[derive(Debug)]
pub(crate) struct Outgoing {
    buf: Box<[u8]>,
    frame_len: usize,
    header_len: usize,
    key: [u8; 4],
    tagged: bool,
    copies: usize,
}

impl Outgoing {
    /// Builds `copies` (at least 1) masked frames of `payload`.
    pub fn new(payload: &[u8], opcode: OpCode, copies: usize) -> Outgoing {
        let key = random_key();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let header_len = header.encode(&mut head);
        let frame_len = header_len + payload.len();
        let copies = copies.max(1);
        let mut buf = vec![0u8; frame_len * copies].into_boxed_slice();
        let (first, _) = buf.split_at_mut(frame_len);
        first[..header_len].copy_from_slice(&head[..header_len]);
        first[header_len..].copy_from_slice(payload);
        apply_mask(&mut first[header_len..], key, 0);
        for i in 1..copies {
            buf.copy_within(0..frame_len, i * frame_len);
        }
        Outgoing {
            buf,
            frame_len,
            header_len,
            key,
            tagged: payload.len() >= 8,
            copies,
        }
    }

    /// The length of one frame.
    #[cfg(test)]
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// How many frames one write can carry.
    pub fn copies(&self) -> usize {
        self.copies
    }

    /// The connection's mask key (also used for its control frames).
    pub fn key(&self) -> [u8; 4] {
        self.key
    }

    /// Tags the first `n` frames with `first_seq`, `first_seq + 1`, … and
    /// returns their total length: send `bytes()[..len]`.
    #[inline]
    pub fn stamp(&mut self, n: usize, first_seq: u64) -> usize {
        let n = n.min(self.copies);
        if self.tagged {
            for i in 0..n {
                let tag = seq_tag(first_seq + i as u64);
                let at = i * self.frame_len + self.header_len;
                for (j, (b, t)) in self.buf[at..at + 8].iter_mut().zip(tag).enumerate() {
                    *b = t ^ self.key[j % 4];
                }
            }
        }
        n * self.frame_len
    }

    /// The frames.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// A masked control frame (ping, pong or close) in a fixed buffer.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    buf: [u8; MAX_CLOSE_FRAME_LEN],
    len: usize,
}

impl Control {
    /// A ping or pong carrying `payload` (at most 125 bytes; longer is cut).
    pub fn new(opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Control {
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        let mut buf = [0u8; MAX_CLOSE_FRAME_LEN];
        let n = header.encode(&mut buf);
        buf[n..n + payload.len()].copy_from_slice(payload);
        apply_mask(&mut buf[n..n + payload.len()], key, 0);
        Control {
            buf,
            len: n + payload.len(),
        }
    }

    /// A close frame with `code` (or an empty one for [`NO_STATUS`]).
    pub fn close(code: u16, key: [u8; 4]) -> Control {
        let mut buf = [0u8; MAX_CLOSE_FRAME_LEN];
        let len = encode_close_frame(code, "", Some(key), &mut buf);
        Control { buf, len }
    }

    /// The encoded frame.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The close code in a close payload, [`NO_STATUS`] if it has none.
pub(crate) fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => NO_STATUS,
    }
}

/// Writes one whole frame and flushes it, within `limit`.
pub(crate) async fn send_frame(conn: &mut Conn, frame: &[u8], limit: Duration) -> io::Result<()> {
    match timeout(limit, async {
        conn.write_all(frame).await?;
        conn.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// Reads and discards until EOF, for at most `limit`, then shuts the
/// connection down: the server is meant to close TCP first.
pub(crate) async fn finish(conn: &mut Conn, reader: &mut FrameReader, limit: Duration) {
    let _ = timeout(limit.min(EOF_WAIT), async {
        loop {
            reader.reset();
            match reader.fill(conn).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let _ = timeout(limit.min(EOF_WAIT), conn.shutdown()).await;
}

/// The client's side of the closing handshake: sends close 1000, waits for
/// the server's close frame (discarding anything before it) and then for
/// its TCP close.
pub(crate) async fn close(
    conn: &mut Conn,
    reader: &mut FrameReader,
    key: [u8; 4],
    limit: Duration,
) -> Result<(), Failure> {
    let frame = Control::close(NORMAL, key);
    send_frame(conn, frame.bytes(), limit)
        .await
        .map_err(|e| (ErrorKind::Closed, format!("sending close: {e}")))?;
    let answered = timeout(limit, async {
        loop {
            loop {
                match reader.next_event() {
                    Ok(Some(Event::Close(_))) => return Ok(()),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => return Err((ErrorKind::Protocol, e.to_string())),
                }
            }
            match reader.fill(conn).await {
                Ok(0) => {
                    return Err((
                        ErrorKind::Closed,
                        "the server closed TCP without answering our close frame".to_owned(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err((ErrorKind::Closed, format!("waiting for close: {e}"))),
            }
        }
    })
    .await;
    match answered {
        Ok(Ok(())) => {
            finish(conn, reader, limit).await;
            Ok(())
        }
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err((
            ErrorKind::Timeout,
            format!("no close frame in answer to ours within {limit:?}"),
        )),
    }
}

/// Answers a close frame the server sent first (echoing its code) and
/// waits for its TCP close.
pub(crate) async fn answer_close(
    conn: &mut Conn,
    reader: &mut FrameReader,
    payload_code: u16,
    key: [u8; 4],
    limit: Duration,
) {
    let reply = Control::close(payload_code, key);
    if send_frame(conn, reply.bytes(), limit).await.is_ok() {
        finish(conn, reader, limit).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let h = FrameHeader {
            fin,
            rsv: 0,
            opcode: OpCode::from_u8(opcode).unwrap(),
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut out);
        let mut v = out[..n].to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Feeds `bytes` to a reader `step` bytes at a time and collects the
    /// events as owned values.
    fn events(bytes: &[u8], step: usize, buf: usize) -> Result<Vec<String>, ProtocolError> {
        let mut r = FrameReader::new(buf);
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            while let Some(ev) = r.next_event()? {
                out.push(match ev {
                    Event::Data {
                        opcode,
                        offset,
                        chunk,
                        last,
                    } => format!(
                        "{opcode:?}@{offset}:{}{}",
                        String::from_utf8_lossy(chunk),
                        if last { "!" } else { "" }
                    ),
                    Event::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                    Event::Pong(p) => format!("pong:{}", String::from_utf8_lossy(p)),
                    Event::Close(p) => format!("close:{}", close_code(p)),
                });
            }
            if fed == bytes.len() {
                return Ok(out);
            }
            // Simulate a read of up to `step` bytes.
            if r.start == r.end {
                r.start = 0;
                r.end = 0;
            } else if r.end == r.buf.len() {
                r.buf.copy_within(r.start..r.end, 0);
                r.end -= r.start;
                r.start = 0;
            }
            let n = step.min(bytes.len() - fed).min(r.buf.len() - r.end);
            r.buf[r.end..r.end + n].copy_from_slice(&bytes[fed..fed + n]);
            r.end += n;
            fed += n;
        }
    }

    fn joined(evs: &[String]) -> String {
        evs.join(" ")
    }

    #[test]
    fn reader_whole_and_split() {
        let mut bytes = frame(1, true, b"hello");
        bytes.extend(frame(9, true, b"pi"));
        bytes.extend(frame(2, false, b"ab"));
        bytes.extend(frame(10, true, b""));
        bytes.extend(frame(0, false, b""));
        bytes.extend(frame(0, true, b"cd"));
        bytes.extend(frame(2, true, b""));
        bytes.extend(frame(8, true, &1000u16.to_be_bytes()));
        let all = events(&bytes, bytes.len(), 4096).unwrap();
        assert_eq!(
            joined(&all),
            "Text@0:hello! ping:pi Binary@0:ab pong: Binary@2:cd! Binary@0:! close:1000"
        );
        // Byte by byte, the data arrives in pieces but adds up the same.
        for step in 1..8 {
            let evs = events(&bytes, step, 256).unwrap();
            let text: String = evs
                .iter()
                .filter_map(|e| e.strip_prefix("Text@"))
                .map(|e| e.split_once(':').unwrap().1.trim_end_matches('!'))
                .collect();
            assert_eq!(text, "hello");
            assert!(evs.iter().any(|e| e == "ping:pi"));
            assert_eq!(evs.last().unwrap(), "close:1000");
            assert_eq!(evs.iter().filter(|e| e.ends_with('!')).count(), 3);
        }
    }

    #[test]
    fn reader_big_frame_through_small_buffer() {
        let payload = vec![b'x'; 100_000];
        let bytes = frame(2, true, &payload);
        let evs = events(&bytes, 7000, 256).unwrap();
        let total: usize = evs
            .iter()
            .map(|e| e.split_once(':').unwrap().1.trim_end_matches('!').len())
            .sum();
        assert_eq!(total, 100_000);
        assert!(evs.last().unwrap().ends_with('!'));
    }

    #[test]
    fn reader_rejects_bad_server_frames() {
        let masked = [0x82, 0x81, 1, 2, 3, 4, 0];
        assert_eq!(
            events(&masked, 100, 256).unwrap_err(),
            ProtocolError::MaskedFrame
        );
        assert_eq!(
            events(&[0xC2, 0], 100, 256).unwrap_err(),
            ProtocolError::ReservedBits(0b100)
        );
        assert_eq!(
            events(&frame(0, true, b"x"), 100, 256).unwrap_err(),
            ProtocolError::UnexpectedContinuation
        );
        let mut b = frame(1, false, b"x");
        b.extend(frame(1, true, b"y"));
        assert_eq!(
            events(&b, 100, 256).unwrap_err(),
            ProtocolError::ExpectedContinuation
        );
    }

    #[test]
    fn outgoing_frames_unmask_to_tagged_payload() {
        let template = payload_template(20, false, 3);
        let mut out = Outgoing::new(&template, OpCode::Binary, 3);
        let len = out.stamp(2, 0x1234_abcd);
        assert_eq!(len, 2 * out.frame_len());
        let expected = Expected::new(template.clone());
        for (i, f) in out.bytes()[..len].chunks(out.frame_len()).enumerate() {
            let (h, n) = FrameHeader::parse(f).unwrap().unwrap();
            assert_eq!(h.opcode, OpCode::Binary);
            assert!(h.fin);
            let mut p = f[n..].to_vec();
            apply_mask(&mut p, h.mask.unwrap(), 0);
            assert_eq!(&p[..8], &seq_tag(0x1234_abcd + i as u64));
            assert_eq!(&p[8..], &template[8..]);
            let seq = 0x1234_abcd + i as u64;
            assert!(expected.matches(seq, 0, &p));
            assert!(!expected.matches(seq + 1, 0, &p));
            // Chunked comparison, every split.
            for s in 0..p.len() {
                assert!(expected.matches(seq, 0, &p[..s]));
                assert!(expected.matches(seq, s as u64, &p[s..]));
            }
            let mut flipped = p.clone();
            flipped[12] ^= 1;
            assert!(!expected.matches(seq, 0, &flipped));
            assert!(!expected.matches(seq, 1, &p));
        }
        assert_eq!(&seq_tag(0x1234_abcd), b"1234abcd");
    }

    #[test]
    fn short_and_text_payloads() {
        let t = payload_template(5, true, 0);
        assert!(t.iter().all(u8::is_ascii_lowercase));
        let e = Expected::new(t.clone());
        assert!(e.matches(99, 0, &t));
        assert!(!e.matches(0, 0, b"zzzzzz"));
        let mut out = Outgoing::new(&t, OpCode::Text, 1);
        assert_eq!(out.stamp(5, 0), out.frame_len());
        assert_ne!(
            payload_template(64, false, 1),
            payload_template(64, false, 2)
        );
    }

    #[test]
    fn response_checks() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(check_response(ok.as_bytes(), key), Ok(()));
        let bad_key = ok.replace("s3pP", "AAAA");
        assert!(check_response(bad_key.as_bytes(), key).is_err());
        let not_101 = "HTTP/1.1 404 Not Found\r\n\r\n";
        assert!(check_response(not_101.as_bytes(), key)
            .unwrap_err()
            .contains("404"));
        let ext = ok.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: x\r\n\r\n");
        assert!(check_response(ext.as_bytes(), key).is_err());
        let no_upgrade = ok.replace("Upgrade: websocket\r\n", "");
        assert!(check_response(no_upgrade.as_bytes(), key).is_err());
        assert_eq!(find_head_end(ok.as_bytes()), Some(ok.len()));
    }

    #[test]
    fn control_frames() {
        let c = Control::new(OpCode::Pong, b"abc", [1, 2, 3, 4]);
        let (h, n) = FrameHeader::parse(c.bytes()).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Pong);
        let mut p = c.bytes()[n..].to_vec();
        apply_mask(&mut p, h.mask.unwrap(), 0);
        assert_eq!(p, b"abc");
        let c = Control::close(NORMAL, [9, 9, 9, 9]);
        let (h, n) = FrameHeader::parse(c.bytes()).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Close);
        let mut p = c.bytes()[n..].to_vec();
        apply_mask(&mut p, h.mask.unwrap(), 0);
        assert_eq!(close_code(&p), 1000);
        assert_eq!(close_code(&[]), NO_STATUS);
    }
}
