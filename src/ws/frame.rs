//! The frame header codec (RFC 6455 §5.2).
//!
//! The relay streams payloads through bounded buffers, so it only ever needs
//! the header: [`FrameHeader::parse`] reads one from the front of a buffer
//! without copying or keeping state (`Ok(None)` means "read more and call
//! again"), and [`FrameHeader::encode`] writes one into a caller's buffer, so
//! a header can be rewritten in place. [`mask_key_offset`] and
//! [`rewrite_mask_key`] let the relay swap the mask key of a header that is
//! already in its buffer without re-encoding it.
//!
//! The parser rejects what no endpoint may ever send (reserved opcodes,
//! fragmented or oversized control frames, 64-bit lengths with the top bit
//! set) but leaves RSV bits and masking direction to the caller, which knows
//! the negotiated extensions and which side it is reading from.

use super::error::ProtocolError;

/// The longest possible frame header: 2 bytes, 8 bytes of extended length
/// and a 4-byte mask key. A buffer of this size always holds a header.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame (close, ping, pong) may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The RSV1 bit in [`FrameHeader::rsv`] (used by permessage-deflate).
pub const RSV1: u8 = 0b100;
/// The RSV2 bit in [`FrameHeader::rsv`].
pub const RSV2: u8 = 0b010;
/// The RSV3 bit in [`FrameHeader::rsv`].
pub const RSV3: u8 = 0b001;

/// A frame opcode (§5.2), restricted to the ones RFC 6455 defines.
///
/// Reserved opcodes are not representable: the parser reports them as
/// [`ProtocolError::ReservedOpcode`], so code holding an `OpCode` never has
/// to deal with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// Continues a fragmented message.
    Continuation = 0,
    /// First frame of a text (UTF-8) message.
    Text = 1,
    /// First frame of a binary message.
    Binary = 2,
    /// Close control frame.
    Close = 8,
    /// Ping control frame.
    Ping = 9,
    /// Pong control frame.
    Pong = 10,
}

impl OpCode {
    /// Whether this is a control opcode (close, ping, pong): control frames
    /// may interleave with a fragmented message but must be unfragmented and
    /// at most 125 bytes long.
    #[inline]
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// The opcode for a 4-bit value, or `None` if it is reserved (or does
    /// not fit in 4 bits).
    #[inline]
    pub fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            0 => Some(OpCode::Continuation),
            1 => Some(OpCode::Text),
            2 => Some(OpCode::Binary),
            8 => Some(OpCode::Close),
            9 => Some(OpCode::Ping),
            10 => Some(OpCode::Pong),
            _ => None,
        }
    }
}

/// A decoded frame header: everything before the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the final frame of its message.
    pub fin: bool,
    /// The three RSV bits as the low 3 bits: [`RSV1`] = 0b100, [`RSV2`] =
    /// 0b010, [`RSV3`] = 0b001. Judging them is the caller's job, since it
    /// knows the negotiated extensions.
    pub rsv: u8,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame (§5.3).
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes (less than 2^63).
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header; no
    /// state is kept, so call again with more bytes. Returns
    /// `Ok(Some((header, header_len)))` otherwise; the payload starts at
    /// `buf[header_len..]`. `header_len` is the length as sent, which can
    /// exceed [`encoded_len`](Self::encoded_len) because non-minimal length
    /// encodings are accepted (be liberal in what you accept).
    ///
    /// Errors are reported as soon as the bytes seen prove them:
    /// - reserved opcode (3-7, 0xB-0xF): [`ProtocolError::ReservedOpcode`];
    /// - control frame with FIN clear: [`ProtocolError::FragmentedControlFrame`];
    /// - control frame payload over 125: [`ProtocolError::ControlFrameTooLong`];
    /// - 64-bit length with the most significant bit set: [`ProtocolError::InvalidLength`].
    ///
    /// RSV bits and the presence or absence of a mask are *not* judged here.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let op = b0 & 0x0F;
        let opcode = OpCode::from_u8(op).ok_or(ProtocolError::ReservedOpcode(op))?;
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        let (payload_len, mut pos) = match len7 {
            126 => match buf.get(2..4).and_then(|s| <[u8; 2]>::try_from(s).ok()) {
                Some(b) => (u64::from(u16::from_be_bytes(b)), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                Some(b) => (u64::from_be_bytes(b), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if payload_len & (1 << 63) != 0 {
            return Err(ProtocolError::InvalidLength);
        }
        if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(ProtocolError::ControlFrameTooLong(payload_len));
        }
        let mask = if masked {
            match buf
                .get(pos..pos + 4)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
            {
                Some(k) => {
                    pos += 4;
                    Some(k)
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    /// Length (2..=14) of this header's encoding, with the minimal length
    /// encoding that [`encode`](Self::encode) writes.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Offset of the mask key inside this header's encoding (2, 4 or 10);
    /// meaningful only if [`mask`](Self::mask) is `Some`. See
    /// [`mask_key_offset`] for a header as received.
    #[inline]
    pub fn mask_key_offset(&self) -> usize {
        match self.payload_len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        }
    }

    /// Writes the header into the front of `out`, with the minimal length
    /// encoding, and returns the number of bytes written
    /// ([`encoded_len`](Self::encoded_len)).
    ///
    /// Writes nothing and returns 0 if `out` is shorter than `encoded_len()`
    /// or if `payload_len` is not representable (2^63 or more). Only the low
    /// 3 bits of `rsv` are used.
    #[inline]
    pub fn encode(&self, out: &mut [u8]) -> usize {
        if self.payload_len & (1 << 63) != 0 {
            return 0;
        }
        let len = self.encoded_len();
        let Some(out) = out.get_mut(..len) else {
            return 0;
        };
        let mut tmp = [0u8; MAX_HEADER_LEN];
        tmp[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = match self.payload_len {
            n @ 0..=125 => {
                tmp[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                tmp[1] = mask_bit | 126;
                tmp[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                tmp[1] = mask_bit | 127;
                tmp[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            tmp[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        debug_assert_eq!(pos, len);
        if let Some(src) = tmp.get(..len) {
            out.copy_from_slice(src);
        }
        len
    }
}

/// Offset of the 4 mask-key bytes inside a header as received, given its
/// 7-bit length field: 2 if the field is below 126, 4 if it is 126, 10 if it
/// is 127.
///
/// The mask bit (0x80) is ignored, so the raw second header byte can be
/// passed as is. This works on non-minimal encodings too, which is why it
/// takes the field rather than a [`FrameHeader`]: it is used to rewrite a
/// mask key in place (see [`rewrite_mask_key`]).
#[inline]
pub fn mask_key_offset(header_len_field: u8) -> usize {
    match header_len_field & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

/// Replaces the mask key of an encoded, masked header in place, e.g. to give
/// a client's frame a fresh key before it goes to the backend.
///
/// `header` starts with the header bytes as received. Returns `false` and
/// changes nothing if the header is not masked or `header` is too short to
/// hold its mask key.
#[inline]
pub fn rewrite_mask_key(header: &mut [u8], key: [u8; 4]) -> bool {
    let Some(&b1) = header.get(1) else {
        return false;
    };
    if b1 & 0x80 == 0 {
        return false;
    }
    let off = mask_key_offset(b1);
    match header.get_mut(off..off + 4) {
        Some(slot) => {
            slot.copy_from_slice(&key);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::mask::apply_mask;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn hdr(opcode: OpCode, fin: bool, mask: Option<[u8; 4]>, payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len,
        }
    }

    fn enc(h: &FrameHeader) -> Vec<u8> {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut out);
        assert_eq!(n, h.encoded_len());
        out[..n].to_vec()
    }

    #[test]
    fn opcode_from_u8_and_is_control() {
        for v in 0..=255u8 {
            match OpCode::from_u8(v) {
                Some(op) => {
                    assert_eq!(op as u8, v);
                    assert_eq!(op.is_control(), v >= 8);
                }
                None => assert!(!matches!(v, 0 | 1 | 2 | 8 | 9 | 10), "{v}"),
            }
        }
        assert!(!OpCode::Text.is_control());
        assert!(!OpCode::Continuation.is_control());
        assert!(OpCode::Close.is_control());
        assert!(OpCode::Ping.is_control());
        assert!(OpCode::Pong.is_control());
    }

    #[test]
    fn round_trip_data_frames() {
        let lens: [(u64, usize); 6] = [
            (0, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (1 << 32, 10),
        ];
        for (len, base) in lens {
            for mask in [None, Some(KEY)] {
                for opcode in [OpCode::Text, OpCode::Binary, OpCode::Continuation] {
                    for fin in [true, false] {
                        for rsv in 0..8 {
                            let h = FrameHeader {
                                rsv,
                                ..hdr(opcode, fin, mask, len)
                            };
                            let bytes = enc(&h);
                            let want = base + if mask.is_some() { 4 } else { 0 };
                            assert_eq!(bytes.len(), want);
                            assert_eq!(FrameHeader::parse(&bytes), Ok(Some((h, want))));
                            // Trailing payload bytes don't change the result.
                            let mut more = bytes.clone();
                            more.extend_from_slice(&[0xAB; 20]);
                            assert_eq!(FrameHeader::parse(&more), Ok(Some((h, want))));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn round_trip_control_frames() {
        for opcode in [OpCode::Close, OpCode::Ping, OpCode::Pong] {
            for len in [0, 1, 2, 125] {
                for mask in [None, Some(KEY)] {
                    let h = hdr(opcode, true, mask, len);
                    let bytes = enc(&h);
                    assert_eq!(FrameHeader::parse(&bytes), Ok(Some((h, bytes.len()))));
                }
            }
        }
    }

    #[test]
    fn partial_input_needs_more_at_every_split() {
        for len in [0u64, 125, 126, 65535, 65536, 1 << 32, (1 << 63) - 1] {
            for mask in [None, Some(KEY)] {
                let bytes = enc(&hdr(OpCode::Binary, true, mask, len));
                for i in 0..bytes.len() {
                    assert_eq!(
                        FrameHeader::parse(&bytes[..i]),
                        Ok(None),
                        "len {len} split {i}"
                    );
                }
            }
        }
        for opcode in [OpCode::Close, OpCode::Ping] {
            let bytes = enc(&hdr(opcode, true, Some(KEY), 125));
            for i in 0..bytes.len() {
                assert_eq!(FrameHeader::parse(&bytes[..i]), Ok(None));
            }
        }
    }

    #[test]
    fn reserved_opcodes() {
        for op in (3..=7).chain(0xB..=0xF) {
            for b0 in [0x80 | op, op, 0xF0 | op] {
                assert_eq!(
                    FrameHeader::parse(&[b0, 0x00]),
                    Err(ProtocolError::ReservedOpcode(op))
                );
                // Detected from the first byte alone.
                assert_eq!(
                    FrameHeader::parse(&[b0]),
                    Err(ProtocolError::ReservedOpcode(op))
                );
            }
        }
    }

    #[test]
    fn fragmented_control_frames() {
        for op in [8u8, 9, 10] {
            assert_eq!(
                FrameHeader::parse(&[op, 0x00]),
                Err(ProtocolError::FragmentedControlFrame)
            );
            assert_eq!(
                FrameHeader::parse(&[op]),
                Err(ProtocolError::FragmentedControlFrame)
            );
            assert!(FrameHeader::parse(&[0x80 | op, 0x00]).unwrap().is_some());
        }
    }

    #[test]
    fn control_frame_too_long() {
        for op in [0x88u8, 0x89, 0x8A] {
            // 7-bit field can't exceed 125 except via 126/127.
            assert_eq!(
                FrameHeader::parse(&[op, 126, 0x00, 126]),
                Err(ProtocolError::ControlFrameTooLong(126))
            );
            assert_eq!(
                FrameHeader::parse(&[op, 0x80 | 126, 0xFF, 0xFF]),
                Err(ProtocolError::ControlFrameTooLong(65535))
            );
            assert_eq!(
                FrameHeader::parse(&[op, 127, 0, 0, 0, 1, 0, 0, 0, 0]),
                Err(ProtocolError::ControlFrameTooLong(1 << 32))
            );
            // Non-minimal but small enough: accepted.
            assert_eq!(
                FrameHeader::parse(&[op, 126, 0, 125]),
                Ok(Some((
                    hdr(OpCode::from_u8(op & 0xF).unwrap(), true, None, 125),
                    4
                )))
            );
        }
        // Data frames may be long.
        assert!(FrameHeader::parse(&[0x82, 126, 0x00, 126])
            .unwrap()
            .is_some());
    }

    #[test]
    fn invalid_length() {
        let mut b = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&b), Err(ProtocolError::InvalidLength));
        b[1] |= 0x80; // masked, key missing: length error comes first
        assert_eq!(FrameHeader::parse(&b), Err(ProtocolError::InvalidLength));
        let b = [0x82, 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(FrameHeader::parse(&b), Err(ProtocolError::InvalidLength));
        let b = [0x82, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            FrameHeader::parse(&b),
            Ok(Some((hdr(OpCode::Binary, true, None, (1 << 63) - 1), 10)))
        );
    }

    #[test]
    fn non_minimal_lengths_accepted() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 126, 0x00, 0x05]),
            Ok(Some((hdr(OpCode::Binary, true, None, 5), 4)))
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4]),
            Ok(Some((hdr(OpCode::Binary, true, Some([1, 2, 3, 4]), 5), 14)))
        );
    }

    #[test]
    fn rsv_and_mask_not_judged() {
        let (h, n) = FrameHeader::parse(&[0xF1, 0x00]).unwrap().unwrap();
        assert_eq!(n, 2);
        assert_eq!(h.rsv, RSV1 | RSV2 | RSV3);
        let (h, _) = FrameHeader::parse(&[0xC1, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, RSV1);
        let (h, _) = FrameHeader::parse(&[0xA1, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, RSV2);
        let (h, _) = FrameHeader::parse(&[0x91, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, RSV3);
        // Encoding uses only the low 3 bits of rsv.
        let h = FrameHeader {
            rsv: 0xFF,
            ..hdr(OpCode::Text, true, None, 0)
        };
        assert_eq!(enc(&h), [0xF1, 0x00]);
    }

    #[test]
    fn rfc_examples() {
        // §5.7: a single-frame unmasked text message.
        let h = hdr(OpCode::Text, true, None, 5);
        assert_eq!(enc(&h), [0x81, 0x05]);
        let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(FrameHeader::parse(&frame), Ok(Some((h, 2))));
        assert_eq!(&frame[2..], b"Hello");

        // A single-frame masked text message.
        let h = hdr(OpCode::Text, true, Some(KEY), 5);
        let mut frame = enc(&h);
        let mut payload = *b"Hello";
        apply_mask(&mut payload, KEY, 0);
        frame.extend_from_slice(&payload);
        assert_eq!(
            frame,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(FrameHeader::parse(&frame), Ok(Some((h, 6))));

        // A fragmented unmasked text message.
        assert_eq!(enc(&hdr(OpCode::Text, false, None, 3)), [0x01, 0x03]);
        assert_eq!(enc(&hdr(OpCode::Continuation, true, None, 2)), [0x80, 0x02]);

        // Unmasked ping and masked pong.
        assert_eq!(enc(&hdr(OpCode::Ping, true, None, 5)), [0x89, 0x05]);
        assert_eq!(
            enc(&hdr(OpCode::Pong, true, Some(KEY), 5)),
            [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d]
        );

        // 256 bytes binary message in a single unmasked frame.
        assert_eq!(
            enc(&hdr(OpCode::Binary, true, None, 256)),
            [0x82, 0x7E, 0x01, 0x00]
        );
        // 64KiB binary message in a single unmasked frame.
        assert_eq!(
            enc(&hdr(OpCode::Binary, true, None, 65536)),
            [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]
        );
    }

    #[test]
    fn encode_into_short_buffer_writes_nothing() {
        for len in [0u64, 126, 65536] {
            for mask in [None, Some(KEY)] {
                let h = hdr(OpCode::Binary, true, mask, len);
                let need = h.encoded_len();
                for short in 0..need {
                    let mut out = vec![0xAA; short];
                    assert_eq!(h.encode(&mut out), 0);
                    assert!(out.iter().all(|&b| b == 0xAA));
                }
                let mut out = vec![0xAA; need + 3];
                assert_eq!(h.encode(&mut out), need);
                assert_eq!(&out[need..], &[0xAA; 3]);
            }
        }
    }

    #[test]
    fn encode_rejects_unrepresentable_length() {
        let h = hdr(OpCode::Binary, true, None, 1 << 63);
        let mut out = [0xAAu8; MAX_HEADER_LEN];
        assert_eq!(h.encode(&mut out), 0);
        assert_eq!(out, [0xAA; MAX_HEADER_LEN]);
    }

    #[test]
    fn mask_key_offsets() {
        assert_eq!(mask_key_offset(0), 2);
        assert_eq!(mask_key_offset(125), 2);
        assert_eq!(mask_key_offset(126), 4);
        assert_eq!(mask_key_offset(127), 10);
        assert_eq!(mask_key_offset(0x80 | 125), 2);
        assert_eq!(mask_key_offset(0x80 | 126), 4);
        assert_eq!(mask_key_offset(0x80 | 127), 10);
        for len in [0u64, 125, 126, 65535, 65536, 1 << 32] {
            let h = hdr(OpCode::Binary, true, Some(KEY), len);
            let bytes = enc(&h);
            let off = mask_key_offset(bytes[1]);
            assert_eq!(off, h.mask_key_offset());
            assert_eq!(&bytes[off..off + 4], &KEY);
            assert_eq!(off + 4, bytes.len());
        }
    }

    #[test]
    fn rewrite_mask_key_in_place() {
        let new = [9, 8, 7, 6];
        for len in [0u64, 126, 65536] {
            let h = hdr(OpCode::Text, false, Some(KEY), len);
            let mut bytes = enc(&h);
            assert!(rewrite_mask_key(&mut bytes, new));
            let (parsed, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
            assert_eq!(n, bytes.len());
            assert_eq!(
                parsed,
                FrameHeader {
                    mask: Some(new),
                    ..h
                }
            );
            // Too short: untouched.
            let mut short = enc(&h);
            short.pop();
            let copy = short.clone();
            assert!(!rewrite_mask_key(&mut short, new));
            assert_eq!(short, copy);
        }
        // Non-minimal encoding keeps its layout.
        let mut b = [0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4];
        assert!(rewrite_mask_key(&mut b, new));
        assert_eq!(b, [0x82, 0xFE, 0x00, 0x05, 9, 8, 7, 6]);
        // Unmasked: untouched.
        let mut b = [0x82, 0x05, 1, 2, 3, 4];
        assert!(!rewrite_mask_key(&mut b, new));
        assert_eq!(b, [0x82, 0x05, 1, 2, 3, 4]);
        assert!(!rewrite_mask_key(&mut [], new));
        assert!(!rewrite_mask_key(&mut [0x82], new));
    }

    #[test]
    fn parse_never_panics_on_short_or_odd_input() {
        // Every 2-byte prefix, truncated and padded: no panic, and errors or
        // results are consistent with the first bytes.
        for b0 in 0..=255u8 {
            for b1 in 0..=255u8 {
                let mut buf = [0u8; MAX_HEADER_LEN];
                buf[0] = b0;
                buf[1] = b1;
                for n in 0..=MAX_HEADER_LEN {
                    if let Ok(Some((h, len))) = FrameHeader::parse(&buf[..n]) {
                        assert!(len <= n);
                        assert_eq!(h.mask.is_some(), b1 & 0x80 != 0);
                    }
                }
            }
        }
    }
}
