//! The `frames` relay mode's transform: validate every frame and rewrite it
//! in place.
//!
//! [`FrameCodec`] sees one direction's bytes in chunks. Frame headers are
//! parsed and checked (RSV bits, opcodes, control frame rules, masking
//! direction, fragmentation order, size limits); payloads stream through
//! chunk by chunk. Frames from the client arrive masked and leave with a
//! fresh key: the key bytes in the header are overwritten and the payload is
//! XORed once with the two keys combined. Text payloads are unmasked, checked
//! for UTF-8 and masked again block by block while hot in cache. Frames from
//! the backend are unmasked and pass through unchanged. Control frames are
//! handled whole (at most 139 bytes), so close payloads can be checked before
//! they are forwarded. A whole small message in one frame, the shape of most
//! chat, game and feed traffic, is recognised by its first two bytes and
//! handled in one step.
//!
//! A violation stops the direction; everything before the offending frame is
//! forwarded and, where the offending frame's header had not been forwarded
//! yet, the destination is left at a frame boundary so a close frame can
//! follow. Compressed messages (permessage-deflate, RSV1) are relayed without
//! UTF-8 inspection since only the endpoints can inflate them.

use super::pump::{End, Step, Transform};
use crate::ws::frame::{FrameHeader, OpCode, RSV1};
use crate::ws::mask::{apply_mask, combine_keys, random_key};
use crate::ws::utf8::Utf8Validator;
use crate::ws::{close, ProtocolError};

/// Which peer a direction reads from; decides the masking rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client: frames must be masked and are re-masked for the backend.
    Client,
    /// The backend: frames must not be masked and pass through as they are.
    Backend,
}

/// Limits and negotiated features for one direction.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Largest payload of one frame; larger ones close with 1009.
    pub max_frame_size: u64,
    /// Largest message (sum of its fragments); larger ones close with 1009.
    pub max_message_size: u64,
    /// permessage-deflate was negotiated: RSV1 allowed on a message's first frame.
    pub deflate: bool,
}

/// The message being relayed, if any (between its first and its final frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    /// No message in progress: the next data frame must start one.
    None,
    /// A text message; `validate` is false when it is compressed.
    Text {
        /// Whether its payload is checked for UTF-8.
        validate: bool,
    },
    /// A binary message.
    Binary,
}

/// A data frame whose payload is streaming through.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes already seen (the mask key position).
    offset: u64,
    /// For client frames: the key the client masked with and the key the
    /// backend sees.
    keys: Option<([u8; 4], [u8; 4])>,
    /// The frame ends its message.
    fin: bool,
    /// Whether its payload is checked for UTF-8.
    validate_utf8: bool,
}

impl Frame {
    /// Runs the payload chunk `data`, which starts at payload byte
    /// `self.offset`, through unmask / UTF-8 / re-mask. Always inlined:
    /// as a call, it cost the 64 B relay about 80 instructions a message.
    #[inline(always)]
    fn transform(&self, utf8: &mut Utf8Validator, data: &mut [u8]) -> Result<(), ProtocolError> {
        match (self.keys, self.validate_utf8) {
            (Some((in_key, out_key)), false) => {
                apply_mask(data, combine_keys(in_key, out_key), self.offset)
            }
            (None, false) => {}
            (None, true) => utf8.feed(data).map_err(|_| ProtocolError::InvalidUtf8)?,
            (Some((in_key, out_key)), true) => {
                let mut offset = self.offset;
                for block in data.chunks_mut(TEXT_BLOCK) {
                    apply_mask(block, in_key, offset);
                    utf8.feed(block).map_err(|_| ProtocolError::InvalidUtf8)?;
                    apply_mask(block, out_key, offset);
                    offset += block.len() as u64;
                }
            }
        }
        Ok(())
    }
}

/// Validates and rewrites one direction's frames in place.
#[derive(Debug)]
pub struct FrameCodec {
    /// Which peer the bytes come from.
    source: Source,
    /// Size limits and negotiated extensions.
    limits: FrameLimits,
    /// The data frame whose payload continues in the next buffer, if any.
    frame: Option<Frame>,
    /// The message in progress.
    message: Message,
    /// Payload bytes of the message in progress.
    message_len: u64,
    /// UTF-8 state of the text message in progress.
    utf8: Utf8Validator,
    /// Only look for the peer's close frame; forward nothing.
    discard: bool,
    /// Largest payload [`FrameCodec::small_message`] takes: 125 (a 7-bit
    /// length) or less where the limits are lower.
    small_max: usize,
    /// Complete messages relayed.
    pub messages: u64,
}

/// Block size for the unmask / validate / re-mask passes over text payloads.
const TEXT_BLOCK: usize = 4096;

impl FrameCodec {
    /// A codec for frames read from `source`.
    pub fn new(source: Source, limits: FrameLimits) -> Self {
        FrameCodec {
            source,
            limits,
            frame: None,
            message: Message::None,
            message_len: 0,
            utf8: Utf8Validator::new(),
            discard: false,
            small_max: limits.max_frame_size.min(limits.max_message_size).min(125) as usize,
            messages: 0,
        }
    }

    /// From now on, forward nothing and only report the peer's close frame
    /// (used while waiting for the reply to a close we sent ourselves).
    pub fn discard_until_close(&mut self) {
        self.discard = true;
    }

    /// Stops with a violation: forwards `[..emit]` and drops the rest.
    fn violation(emit: usize, boundary: bool, len: usize, e: ProtocolError) -> (Step, Option<End>) {
        (
            Step {
                emit,
                consume: len,
                boundary,
            },
            Some(End::Violation(e)),
        )
    }

    /// The common case in one step: `buf` starts with a whole message in one
    /// frame (FIN, no RSV bits, text or binary) with a payload of at most
    /// [`small_max`](Self::small_max) bytes, masked exactly when it comes
    /// from the client, and no message is in progress. Such a frame passes
    /// every check of the general path by its first two bytes, so only the
    /// payload is left to do ([`Frame::transform`]: re-mask it, and check
    /// its UTF-8 if it is text). Returns the frame's length, or `None` for anything else, which
    /// the general path then handles (and judges, if it is a violation).
    #[inline]
    fn small_message(&mut self, buf: &mut [u8]) -> Option<Result<usize, ProtocolError>> {
        let (&mut [b0, b1], rest) = buf.split_first_chunk_mut::<2>()?;
        let text = match b0 {
            0x81 => true,
            0x82 => false,
            _ => return None,
        };
        let len = usize::from(b1 & 0x7F);
        let masked = b1 & 0x80 != 0;
        if len > self.small_max
            || masked != (self.source == Source::Client)
            || self.message != Message::None
        {
            return None;
        }
        let (keys, header_len) = if masked {
            let (key, payload) = rest.split_first_chunk_mut::<4>()?;
            if payload.len() < len {
                return None;
            }
            let out_key = random_key();
            let in_key = std::mem::replace(key, out_key);
            (Some((in_key, out_key)), 6)
        } else {
            if rest.len() < len {
                return None;
            }
            (None, 2)
        };
        let frame = Frame {
            remaining: len as u64,
            offset: 0,
            keys,
            fin: true,
            validate_utf8: text,
        };
        if text {
            self.utf8.reset();
        }
        let payload = &mut buf[header_len..header_len + len];
        if let Err(e) = frame.transform(&mut self.utf8, payload) {
            return Some(Err(e));
        }
        if text && self.utf8.finish().is_err() {
            return Some(Err(ProtocolError::InvalidUtf8));
        }
        self.messages += 1;
        Some(Ok(header_len + len))
    }

    /// Checks a data frame header against the message state and limits, and
    /// starts it.
    fn start_data_frame(&mut self, h: &FrameHeader) -> Result<(), ProtocolError> {
        match (h.opcode, self.message) {
            (OpCode::Continuation, Message::None) => {
                return Err(ProtocolError::UnexpectedContinuation)
            }
            (OpCode::Text | OpCode::Binary, Message::Text { .. } | Message::Binary) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        if h.payload_len > self.limits.max_frame_size {
            return Err(ProtocolError::FrameTooLarge {
                len: h.payload_len,
                max: self.limits.max_frame_size,
            });
        }
        let message_len = match h.opcode {
            OpCode::Continuation => self.message_len.saturating_add(h.payload_len),
            _ => h.payload_len,
        };
        if message_len > self.limits.max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                len: message_len,
                max: self.limits.max_message_size,
            });
        }
        match h.opcode {
            OpCode::Text => {
                self.message = Message::Text {
                    validate: h.rsv & RSV1 == 0,
                };
                self.utf8.reset();
            }
            OpCode::Binary => self.message = Message::Binary,
            _ => {}
        }
        self.message_len = message_len;
        Ok(())
    }

    /// Called when a data frame's payload is complete.
    fn end_data_frame(&mut self, fin: bool) -> Result<(), ProtocolError> {
        if fin {
            if let Message::Text { validate: true } = self.message {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            self.message = Message::None;
            self.message_len = 0;
            self.messages += 1;
        }
        Ok(())
    }

    /// Looks for the close frame only (see [`FrameCodec::discard_until_close`]).
    fn scan(&mut self, buf: &mut [u8]) -> (Step, Option<End>) {
        let mut pos = 0;
        loop {
            if let Some(frame) = self.frame.as_mut() {
                let n = frame.remaining.min((buf.len() - pos) as u64);
                frame.remaining -= n;
                pos += n as usize;
                if frame.remaining > 0 {
                    break;
                }
                self.frame = None;
            }
            let (h, hlen) = match FrameHeader::parse(&buf[pos..]) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => return Self::violation(0, false, buf.len(), e),
            };
            if h.opcode == OpCode::Close {
                let end = pos + hlen + h.payload_len as usize;
                if end > buf.len() {
                    break;
                }
                let payload = &mut buf[pos + hlen..end];
                if let Some(key) = h.mask {
                    apply_mask(payload, key, 0);
                }
                let (code, reason) = match close::parse_close_payload(payload) {
                    Ok(Some((code, reason))) => (Some(code), reason.to_string()),
                    _ => (None, String::new()),
                };
                let step = Step {
                    emit: 0,
                    consume: buf.len(),
                    boundary: false,
                };
                return (step, Some(End::Close { code, reason }));
            }
            self.frame = Some(Frame {
                remaining: h.payload_len,
                offset: 0,
                keys: None,
                fin: h.fin,
                validate_utf8: false,
            });
            pos += hlen;
        }
        let step = Step {
            emit: 0,
            consume: pos,
            boundary: false,
        };
        (step, None)
    }
}

impl Transform for FrameCodec {
    fn process(&mut self, buf: &mut [u8]) -> (Step, Option<End>) {
        if self.discard {
            return self.scan(buf);
        }
        let len = buf.len();
        let mut pos = 0;
        // The rest of a frame begun in an earlier buffer. Its header is out
        // already, so a violation in it leaves the destination mid-frame.
        if let Some(frame) = self.frame.as_mut() {
            let n = frame.remaining.min(len as u64) as usize;
            if let Err(e) = frame.transform(&mut self.utf8, &mut buf[..n]) {
                return Self::violation(0, false, len, e);
            }
            frame.remaining -= n as u64;
            frame.offset += n as u64;
            if frame.remaining > 0 {
                let step = Step {
                    emit: len,
                    consume: len,
                    boundary: false,
                };
                return (step, None);
            }
            let fin = frame.fin;
            self.frame = None;
            pos = n;
            if let Err(e) = self.end_data_frame(fin) {
                return Self::violation(pos, false, len, e);
            }
        }
        // Frames that start in this buffer. Most end in it too and leave no
        // state behind; only the last may continue into the next buffer.
        loop {
            let start = pos;
            match self.small_message(&mut buf[start..]) {
                Some(Ok(n)) => {
                    pos += n;
                    continue;
                }
                Some(Err(e)) => return Self::violation(start, true, len, e),
                None => {}
            }
            let (h, hlen) = match FrameHeader::parse(&buf[start..]) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => return Self::violation(start, true, len, e),
            };
            let masked = h.mask.is_some();
            match (self.source, masked) {
                (Source::Client, false) => {
                    return Self::violation(start, true, len, ProtocolError::UnmaskedFrame)
                }
                (Source::Backend, true) => {
                    return Self::violation(start, true, len, ProtocolError::MaskedFrame)
                }
                _ => {}
            }
            let allowed_rsv = match h.opcode {
                OpCode::Text | OpCode::Binary if self.limits.deflate => RSV1,
                _ => 0,
            };
            if h.rsv & !allowed_rsv != 0 {
                return Self::violation(start, true, len, ProtocolError::ReservedBits(h.rsv));
            }
            let payload_start = start + hlen;

            if h.opcode.is_control() {
                let end = payload_start + h.payload_len as usize;
                if end > len {
                    // Control frames are handled whole: wait for the rest.
                    break;
                }
                let payload = &mut buf[payload_start..end];
                if let Some(key) = h.mask {
                    apply_mask(payload, key, 0);
                }
                let close = if h.opcode == OpCode::Close {
                    match close::parse_close_payload(payload) {
                        Ok(Some((code, reason))) => Some((Some(code), reason.to_string())),
                        Ok(None) => Some((None, String::new())),
                        Err(e) => return Self::violation(start, true, len, e),
                    }
                } else {
                    None
                };
                if masked {
                    let key = random_key();
                    buf[payload_start - 4..payload_start].copy_from_slice(&key);
                    apply_mask(&mut buf[payload_start..end], key, 0);
                }
                pos = end;
                if let Some((code, reason)) = close {
                    let step = Step {
                        emit: pos,
                        consume: len,
                        boundary: true,
                    };
                    return (step, Some(End::Close { code, reason }));
                }
                continue;
            }

            if let Err(e) = self.start_data_frame(&h) {
                return Self::violation(start, true, len, e);
            }
            let keys = h.mask.map(|in_key| {
                let out_key = random_key();
                buf[payload_start - 4..payload_start].copy_from_slice(&out_key);
                (in_key, out_key)
            });
            let mut frame = Frame {
                remaining: h.payload_len,
                offset: 0,
                keys,
                fin: h.fin,
                validate_utf8: matches!(self.message, Message::Text { validate: true }),
            };
            let n = frame.remaining.min((len - payload_start) as u64) as usize;
            if let Err(e) =
                frame.transform(&mut self.utf8, &mut buf[payload_start..payload_start + n])
            {
                return Self::violation(start, true, len, e);
            }
            pos = payload_start + n;
            if frame.remaining > n as u64 {
                frame.remaining -= n as u64;
                frame.offset = n as u64;
                self.frame = Some(frame);
                break;
            }
            if let Err(e) = self.end_data_frame(frame.fin) {
                return Self::violation(start, true, len, e);
            }
        }
        let step = Step {
            emit: pos,
            consume: pos,
            boundary: self.frame.is_none(),
        };
        (step, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 21,
        deflate: false,
    };

    /// Encodes one frame (masked when `key` is set).
    fn frame(fin: bool, rsv: u8, opcode: u8, key: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.push((fin as u8) << 7 | rsv << 4 | opcode);
        let m = if key.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut data = payload.to_vec();
        if let Some(k) = key {
            out.extend_from_slice(&k);
            apply_mask(&mut data, k, 0);
        }
        out.extend_from_slice(&data);
        out
    }

    /// Feeds `input` in pieces of `piece` bytes the way a pump does, returns
    /// the emitted bytes and the end.
    fn run(codec: &mut FrameCodec, input: &[u8], piece: usize) -> (Vec<u8>, Option<End>) {
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            buf.extend_from_slice(chunk);
            let (step, end) = codec.process(&mut buf);
            out.extend_from_slice(&buf[..step.emit]);
            buf.drain(..step.consume);
            if end.is_some() {
                return (out, end);
            }
        }
        (out, None)
    }

    /// A decoded frame: opcode, fin, unmasked payload, whether it was masked.
    type Decoded = (OpCode, bool, Vec<u8>, bool);

    /// Decodes frames from the output.
    fn decode(mut data: &[u8]) -> Vec<Decoded> {
        let mut frames = Vec::new();
        while !data.is_empty() {
            let (h, hlen) = FrameHeader::parse(data).unwrap().unwrap();
            let end = hlen + h.payload_len as usize;
            let mut payload = data[hlen..end].to_vec();
            if let Some(k) = h.mask {
                apply_mask(&mut payload, k, 0);
            }
            frames.push((h.opcode, h.fin, payload, h.mask.is_some()));
            data = &data[end..];
        }
        frames
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn client_frames_are_remasked_with_a_fresh_key_in_any_chunking() {
        let text = "héllo wörld ".repeat(700);
        let mut input = frame(false, 0, 1, Some(KEY), &text.as_bytes()[..5000]);
        input.extend(frame(true, 0, 9, Some(KEY), b"ping"));
        input.extend(frame(true, 0, 0, Some(KEY), &text.as_bytes()[5000..]));
        input.extend(frame(true, 0, 2, Some(KEY), &[7u8; 70000]));
        for piece in [1, 3, 13, 100, 4096, 1 << 20] {
            let mut codec = FrameCodec::new(Source::Client, LIMITS);
            let (out, end) = run(&mut codec, &input, piece);
            assert!(end.is_none(), "piece {piece}: {end:?}");
            assert_eq!(out.len(), input.len());
            let frames = decode(&out);
            assert_eq!(frames.len(), 4);
            assert!(frames.iter().all(|f| f.3));
            assert_ne!(out[6..10], KEY, "the mask key must be replaced");
            let mut joined = frames[0].2.clone();
            joined.extend(&frames[2].2);
            assert_eq!(joined, text.as_bytes());
            assert_eq!(frames[1].2, b"ping");
            assert_eq!(frames[3].2, vec![7u8; 70000]);
            assert_eq!(codec.messages, 2);
        }
    }

    #[test]
    fn backend_frames_pass_unchanged() {
        let mut input = frame(true, 0, 1, None, b"hello");
        input.extend(frame(true, 0, 10, None, b""));
        input.extend(frame(true, 0, 8, None, &[0x03, 0xe8, b'b', b'y', b'e']));
        input.extend(frame(true, 0, 1, None, b"after close is dropped"));
        let mut codec = FrameCodec::new(Source::Backend, LIMITS);
        let (out, end) = run(&mut codec, &input, 2);
        assert_eq!(out, input[..input.len() - 24]);
        match end {
            Some(End::Close { code, reason }) => {
                assert_eq!(code, Some(1000));
                assert_eq!(reason, "bye");
            }
            other => panic!("{other:?}"),
        }
    }

    fn violation(source: Source, limits: FrameLimits, input: &[u8]) -> (Vec<u8>, u16) {
        let mut codec = FrameCodec::new(source, limits);
        let (out, end) = run(&mut codec, input, 1 << 20);
        match end {
            Some(End::Violation(e)) => (out, e.close_code()),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn violations_map_to_close_codes() {
        let ok = frame(true, 0, 1, Some(KEY), b"ok");
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (frame(true, 0, 1, None, b"unmasked"), 1002),
            (frame(true, 4, 1, Some(KEY), b"rsv1"), 1002),
            (frame(true, 2, 2, Some(KEY), b"rsv2"), 1002),
            (frame(true, 0, 3, Some(KEY), b"reserved opcode"), 1002),
            (frame(false, 0, 9, Some(KEY), b"fragmented ping"), 1002),
            (frame(true, 0, 9, Some(KEY), &[0u8; 126]), 1002),
            (frame(true, 0, 0, Some(KEY), b"lone continuation"), 1002),
            (frame(true, 0, 1, Some(KEY), &[0xce, 0xba, 0xff]), 1007),
            (frame(true, 0, 8, Some(KEY), &[0x03]), 1002),
            (frame(true, 0, 8, Some(KEY), &[0x03, 0xed]), 1002),
            (frame(true, 0, 8, Some(KEY), &[0x03, 0xe8, 0xff]), 1007),
            (
                frame(true, 0, 2, Some(KEY), &vec![0u8; (1 << 20) + 1]),
                1009,
            ),
        ];
        for (bad, code) in cases {
            let mut input = ok.clone();
            input.extend(&bad);
            let (out, got) = violation(Source::Client, LIMITS, &input);
            assert_eq!(got, code, "frame {:02x?}", &bad[..2]);
            // The good frame before it went through, the bad one did not.
            assert_eq!(out.len(), ok.len());
        }
        let mut input = frame(false, 0, 1, Some(KEY), b"a");
        input.extend(frame(true, 0, 1, Some(KEY), b"b"));
        assert_eq!(violation(Source::Client, LIMITS, &input).1, 1002);
        let masked_from_backend = frame(true, 0, 2, Some(KEY), b"x");
        assert_eq!(
            violation(Source::Backend, LIMITS, &masked_from_backend).1,
            1002
        );
    }

    #[test]
    fn message_limit_counts_fragments() {
        let limits = FrameLimits {
            max_frame_size: 100,
            max_message_size: 150,
            deflate: false,
        };
        let mut input = frame(false, 0, 2, None, &[1; 100]);
        input.extend(frame(true, 0, 0, None, &[1; 51]));
        let (out, code) = violation(Source::Backend, limits, &input);
        assert_eq!(code, 1009);
        assert_eq!(out.len(), 102);
    }

    #[test]
    fn utf8_is_checked_across_fragments_and_fails_fast() {
        // "€" = e2 82 ac split over two frames: fine.
        let mut input = frame(false, 0, 1, None, &[0xe2, 0x82]);
        input.extend(frame(true, 0, 0, None, &[0xac]));
        let mut codec = FrameCodec::new(Source::Backend, LIMITS);
        let (out, end) = run(&mut codec, &input, 1);
        assert!(end.is_none());
        assert_eq!(out, input);
        // A message that ends in the middle of a sequence is invalid.
        let input = frame(true, 0, 1, None, &[0x61, 0xe2, 0x82]);
        assert_eq!(violation(Source::Backend, LIMITS, &input).1, 1007);
        // An invalid byte in a streamed payload stops the direction at once,
        // before the rest of the frame arrives.
        let big = frame(true, 0, 1, None, &[0xffu8; 1000]);
        let mut codec = FrameCodec::new(Source::Backend, LIMITS);
        let (_, end) = run(&mut codec, &big[..10], 10);
        assert!(matches!(
            end,
            Some(End::Violation(ProtocolError::InvalidUtf8))
        ));
    }

    #[test]
    fn compressed_messages_skip_utf8_only_when_deflate_was_negotiated() {
        let limits = FrameLimits {
            deflate: true,
            ..LIMITS
        };
        let input = frame(true, 4, 1, Some(KEY), &[0xff, 0x00, 0x12]);
        let mut codec = FrameCodec::new(Source::Client, limits);
        let (out, end) = run(&mut codec, &input, 2);
        assert!(end.is_none());
        assert_eq!(decode(&out)[0].2, vec![0xff, 0x00, 0x12]);
        // RSV1 on a continuation frame is still a violation.
        let mut input = frame(false, 4, 1, Some(KEY), b"a");
        input.extend(frame(true, 4, 0, Some(KEY), b"b"));
        assert_eq!(violation(Source::Client, limits, &input).1, 1002);
    }

    #[test]
    fn discard_mode_reports_only_the_close() {
        let mut input = frame(true, 0, 2, Some(KEY), &[1; 3000]);
        input.extend(frame(true, 0, 8, Some(KEY), &[0x03, 0xe9]));
        let mut codec = FrameCodec::new(Source::Client, LIMITS);
        codec.discard_until_close();
        let (out, end) = run(&mut codec, &input, 7);
        assert!(out.is_empty());
        assert!(matches!(
            end,
            Some(End::Close {
                code: Some(1001),
                ..
            })
        ));
    }

    /// Decodes the complete frames at the front of `data` and says how many
    /// bytes of an incomplete one follow them.
    fn decode_complete(mut data: &[u8]) -> (Vec<Decoded>, usize) {
        let mut frames = Vec::new();
        while let Ok(Some((h, hlen))) = FrameHeader::parse(data) {
            let end = hlen + h.payload_len as usize;
            if end > data.len() {
                break;
            }
            frames.extend(decode(&data[..end]));
            data = &data[end..];
        }
        (frames, data.len())
    }

    #[test]
    fn small_message_path_agrees_with_the_general_path() {
        // A deterministic mix of small and large, whole and fragmented, text
        // and binary messages, pings, and now and then a violation, relayed
        // in random pieces by a codec with the one-step path for small
        // messages and by one without it: what reaches the destination and
        // how the direction ends must be the same.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let limits = [
            LIMITS,
            FrameLimits {
                max_frame_size: 100,
                max_message_size: 150,
                deflate: false,
            },
            FrameLimits {
                deflate: true,
                ..LIMITS
            },
        ];
        let text = "añb€c😀 ".repeat(40);
        for round in 0..600 {
            let limits = limits[round % limits.len()];
            for source in [Source::Client, Source::Backend] {
                let key = (source == Source::Client).then_some(KEY);
                let mut input = Vec::new();
                for _ in 0..next(12) + 1 {
                    let len = match next(4) {
                        0 => next(300) as usize,
                        _ => next(127) as usize,
                    };
                    let payload: Vec<u8> = match next(2) {
                        0 => text.as_bytes()[..len.min(text.len())].to_vec(),
                        _ => (0..len).map(|i| i as u8).collect(),
                    };
                    match next(12) {
                        0 => input.extend(frame(true, 0, 9, key, &payload[..len.min(20)])),
                        1 => {
                            // A fragmented message, cut anywhere.
                            let cut = next(len as u64 + 1) as usize;
                            input.extend(frame(false, 0, 2, key, &payload[..cut]));
                            input.extend(frame(true, 0, 0, key, &payload[cut..]));
                        }
                        2 => {
                            // One of the violations, or what is one only
                            // under some limits: bad UTF-8, RSV bits, the
                            // wrong masking, a stray continuation, a new
                            // message inside a fragmented one.
                            let bad = match next(6) {
                                0 => frame(true, 0, 1, key, &[b'a', 0xFF, b'b']),
                                1 => frame(true, 4, 1, key, b"rsv1"),
                                2 => frame(true, 2, 2, key, b"rsv2"),
                                3 => frame(true, 0, 2, key.xor(Some(KEY)), b"mask"),
                                4 => frame(true, 0, 0, key, b"continuation"),
                                _ => {
                                    let mut two = frame(false, 0, 1, key, b"first");
                                    two.extend(frame(true, 0, 2, key, b"second"));
                                    two
                                }
                            };
                            input.extend(bad);
                        }
                        n => {
                            let is_text = n % 2 == 0 && payload.len() == len;
                            let opcode = if is_text && std::str::from_utf8(&payload).is_ok() {
                                1
                            } else {
                                2
                            };
                            input.extend(frame(true, 0, opcode, key, &payload));
                        }
                    }
                }
                let piece = [1, 7, 64, 200, 1 << 16][next(5) as usize];
                let mut fast = FrameCodec::new(source, limits);
                let mut general = FrameCodec::new(source, limits);
                general.small_max = 0;
                let (fast_out, fast_end) = run(&mut fast, &input, piece);
                let (general_out, general_end) = run(&mut general, &input, piece);
                let context = format!("round {round} {source:?} piece {piece}");
                assert_eq!(fast_out.len(), general_out.len(), "{context}");
                assert_eq!(
                    decode_complete(&fast_out),
                    decode_complete(&general_out),
                    "{context}"
                );
                assert_eq!(
                    format!("{fast_end:?}"),
                    format!("{general_end:?}"),
                    "{context}"
                );
                assert_eq!(fast.messages, general.messages, "{context}");
            }
        }
    }
}
