//! Close frames and the closing handshake (RFC 6455 §5.5.1, §7).
//!
//! The relay checks every close frame a peer sends ([`parse_close_payload`]),
//! writes its own close frames into a fixed-size stack buffer
//! ([`encode_close_frame`]) when it has to speak for itself (shutdown 1001,
//! backend failure 1014/1011, protocol violations 1002/1007/1009), and tracks
//! each connection's side of the closing handshake with [`CloseState`].
//!
//! Status codes are plain `u16` constants: peers may send any registered or
//! private code, and a newtype would add nothing but conversions.

use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::apply_mask;

/// 1000: normal closure; the purpose of the connection has been fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: an endpoint is going away (server shutdown, page navigation).
pub const GOING_AWAY: u16 = 1001;
/// 1002: the peer violated the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: the endpoint received a data type it cannot accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// 1005: no status code was present. Never sent on the wire; it is what
/// the receiver reports for an empty close payload.
pub const NO_STATUS: u16 = 1005;
/// 1006: the connection closed without a close frame. Never sent on the wire.
pub const ABNORMAL: u16 = 1006;
/// 1007: a message's data was inconsistent with its type (invalid UTF-8).
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: a message violated the endpoint's policy.
pub const POLICY_VIOLATION: u16 = 1008;
/// 1009: a message was too big to process.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1010: the client expected the server to negotiate an extension.
pub const MANDATORY_EXTENSION: u16 = 1010;
/// 1011: the server hit an unexpected condition.
pub const INTERNAL_ERROR: u16 = 1011;
/// 1012: the service is restarting (IANA registry).
pub const SERVICE_RESTART: u16 = 1012;
/// 1013: try again later, e.g. the server is overloaded (IANA registry).
pub const TRY_AGAIN_LATER: u16 = 1013;
/// 1014: a gateway got an invalid response from the upstream server (IANA
/// registry); what the proxy sends when a backend fails mid-session.
pub const BAD_GATEWAY: u16 = 1014;

/// The longest close frame: a full header plus a 125-byte payload. A buffer
/// of this size always holds what [`encode_close_frame`] writes.
pub const MAX_CLOSE_FRAME_LEN: usize = MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD;

/// The longest close reason: a control payload minus the 2-byte code.
pub const MAX_REASON_LEN: usize = MAX_CONTROL_PAYLOAD - 2;

/// Whether a peer may send this code in a close frame (RFC 6455 §7.4 and the
/// IANA registry): 1000-1003, 1007-1014 and the application/private range
/// 3000-4999. Everything else (0-999, 1004-1006, 1015-2999, 5000+) is a
/// protocol error when received.
#[inline]
pub fn is_allowed_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Validates a close frame's (unmasked) payload.
///
/// An empty payload gives `Ok(None)` (the receiver reports [`NO_STATUS`]).
/// Otherwise returns the code and reason. Errors: a 1-byte payload is
/// [`ProtocolError::InvalidClosePayload`], a code that may not appear on the
/// wire is [`ProtocolError::InvalidCloseCode`] (checked before the reason),
/// and a reason that is not UTF-8 is [`ProtocolError::InvalidUtf8`].
#[inline]
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_allowed_on_wire(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason =
                simdutf8::basic::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a char
/// boundary.
#[inline]
pub fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Writes a complete close frame into `out` and returns its length.
///
/// The payload is `code` followed by `reason`, truncated at a char boundary
/// to [`MAX_REASON_LEN`] bytes so the payload fits the 125-byte control
/// limit. With `mask` the payload is masked (client-to-server direction).
/// The code is written as given; pass one that [`is_allowed_on_wire`], or
/// [`NO_STATUS`] to send a close frame with an empty payload (`reason` is
/// then ignored), e.g. to echo a peer's empty close.
#[inline]
pub fn encode_close_frame(
    code: u16,
    reason: &str,
    mask: Option<[u8; 4]>,
    out: &mut [u8; MAX_CLOSE_FRAME_LEN],
) -> usize {
    let reason = truncate_at_char_boundary(reason, MAX_REASON_LEN).as_bytes();
    let payload_len = if code == NO_STATUS {
        0
    } else {
        2 + reason.len()
    };
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::Close,
        mask,
        payload_len: payload_len as u64,
    };
    let header_len = header.encode(out);
    let Some(payload) = out.get_mut(header_len..header_len + payload_len) else {
        return header_len;
    };
    if let Some((code_bytes, reason_bytes)) = payload.split_at_mut_checked(2) {
        code_bytes.copy_from_slice(&code.to_be_bytes());
        reason_bytes.copy_from_slice(reason);
    }
    if let Some(key) = mask {
        apply_mask(payload, key, 0);
    }
    header_len + payload_len
}

/// One connection's progress through the closing handshake (§7), modelled
/// on tungstenite's `WebSocketState`.
///
/// The relay keeps one per side: it decides whether data may still be sent
/// or is still expected, and when the TCP connection may be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloseState {
    /// No close frame sent or received; data flows both ways.
    #[default]
    Open,
    /// We sent a close frame and wait for the peer's; we send no more data
    /// but still read (and may discard) the peer's frames.
    SentByUs,
    /// The peer sent a close frame; we must answer with ours and expect no
    /// more data from the peer.
    ReceivedFromPeer,
    /// Both close frames have been sent; the TCP connection may be closed.
    Acknowledged,
}

impl CloseState {
    /// The state after we send a close frame.
    #[inline]
    #[must_use]
    pub fn on_close_sent(self) -> Self {
        match self {
            CloseState::Open => CloseState::SentByUs,
            CloseState::ReceivedFromPeer | CloseState::Acknowledged => CloseState::Acknowledged,
            CloseState::SentByUs => CloseState::SentByUs,
        }
    }

    /// The state after a close frame arrives from the peer.
    #[inline]
    #[must_use]
    pub fn on_close_received(self) -> Self {
        match self {
            CloseState::Open => CloseState::ReceivedFromPeer,
            CloseState::SentByUs | CloseState::Acknowledged => CloseState::Acknowledged,
            CloseState::ReceivedFromPeer => CloseState::ReceivedFromPeer,
        }
    }

    /// Whether we may still send data frames (we have not sent a close).
    #[inline]
    pub fn can_send_data(self) -> bool {
        matches!(self, CloseState::Open | CloseState::ReceivedFromPeer)
    }

    /// Whether the peer may still send data frames (it has not sent a close).
    #[inline]
    pub fn can_receive_data(self) -> bool {
        matches!(self, CloseState::Open | CloseState::SentByUs)
    }

    /// Whether we still owe the peer a close frame.
    #[inline]
    pub fn must_send_close(self) -> bool {
        self == CloseState::ReceivedFromPeer
    }

    /// Whether the closing handshake is complete.
    #[inline]
    pub fn is_closed(self) -> bool {
        self == CloseState::Acknowledged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_codes() {
        for code in 0..=u16::MAX {
            let want = (1000..=1003).contains(&code)
                || (1007..=1014).contains(&code)
                || (3000..=4999).contains(&code);
            assert_eq!(is_allowed_on_wire(code), want, "{code}");
        }
        for code in [
            NORMAL,
            GOING_AWAY,
            PROTOCOL_ERROR,
            UNSUPPORTED_DATA,
            INVALID_PAYLOAD,
            POLICY_VIOLATION,
            MESSAGE_TOO_BIG,
            MANDATORY_EXTENSION,
            INTERNAL_ERROR,
            SERVICE_RESTART,
            TRY_AGAIN_LATER,
            BAD_GATEWAY,
        ] {
            assert!(is_allowed_on_wire(code), "{code}");
        }
        for code in [
            0,
            999,
            1004,
            NO_STATUS,
            ABNORMAL,
            1015,
            1016,
            2000,
            2999,
            5000,
            u16::MAX,
        ] {
            assert!(!is_allowed_on_wire(code), "{code}");
        }
        assert_eq!(
            [
                NO_STATUS,
                ABNORMAL,
                BAD_GATEWAY,
                TRY_AGAIN_LATER,
                SERVICE_RESTART
            ],
            [1005, 1006, 1014, 1013, 1012]
        );
    }

    #[test]
    fn payload_parsing() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ProtocolError::InvalidClosePayload)
        );
        assert_eq!(parse_close_payload(&[0x03, 0xE8]), Ok(Some((1000, ""))));
        assert_eq!(
            parse_close_payload(b"\x03\xE9bye \xC3\xA9"),
            Ok(Some((1001, "bye é")))
        );
        // Every code class.
        for (code, ok) in [
            (0u16, false),
            (999, false),
            (1000, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1011, true),
            (1014, true),
            (1015, false),
            (1016, false),
            (2999, false),
            (3000, true),
            (3999, true),
            (4000, true),
            (4999, true),
            (5000, false),
            (u16::MAX, false),
        ] {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(b"reason");
            let got = parse_close_payload(&p);
            if ok {
                assert_eq!(got, Ok(Some((code, "reason"))), "{code}");
            } else {
                assert_eq!(got, Err(ProtocolError::InvalidCloseCode(code)), "{code}");
            }
        }
        // Invalid UTF-8 reasons.
        assert_eq!(
            parse_close_payload(b"\x03\xE8\xFF"),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(
            parse_close_payload(b"\x03\xE8ok\xCE"),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(
            parse_close_payload(b"\x03\xE8\xED\xA0\x80"),
            Err(ProtocolError::InvalidUtf8)
        );
        // The code is judged before the reason.
        assert_eq!(
            parse_close_payload(b"\x03\xED\xFF"),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
    }

    /// Parses a frame written by `encode_close_frame` the way the relay would.
    fn decode(frame: &[u8]) -> (FrameHeader, Vec<u8>) {
        let (h, n) = FrameHeader::parse(frame).unwrap().unwrap();
        assert_eq!(n + h.payload_len as usize, frame.len());
        let mut payload = frame[n..].to_vec();
        if let Some(key) = h.mask {
            apply_mask(&mut payload, key, 0);
        }
        (h, payload)
    }

    #[test]
    fn encode_round_trips() {
        for mask in [None, Some([0x37, 0xfa, 0x21, 0x3d])] {
            for (code, reason) in [
                (NORMAL, ""),
                (GOING_AWAY, "shutting down"),
                (BAD_GATEWAY, "backend gone ✗"),
                (4000, "app"),
            ] {
                let mut out = [0u8; MAX_CLOSE_FRAME_LEN];
                let n = encode_close_frame(code, reason, mask, &mut out);
                let (h, payload) = decode(&out[..n]);
                assert!(h.fin);
                assert_eq!(h.opcode, OpCode::Close);
                assert_eq!(h.rsv, 0);
                assert_eq!(h.mask, mask);
                assert_eq!(parse_close_payload(&payload), Ok(Some((code, reason))));
                if mask.is_some() && !reason.is_empty() {
                    // Actually masked on the wire.
                    assert_ne!(&out[n - reason.len()..n], reason.as_bytes());
                }
            }
        }
        // Exact bytes for an unmasked 1000.
        let mut out = [0u8; MAX_CLOSE_FRAME_LEN];
        let n = encode_close_frame(NORMAL, "", None, &mut out);
        assert_eq!(&out[..n], &[0x88, 0x02, 0x03, 0xE8]);
    }

    #[test]
    fn no_status_writes_an_empty_close() {
        let mut out = [0u8; MAX_CLOSE_FRAME_LEN];
        let n = encode_close_frame(NO_STATUS, "ignored", None, &mut out);
        assert_eq!(&out[..n], &[0x88, 0x00]);
        let n = encode_close_frame(NO_STATUS, "ignored", Some([1, 2, 3, 4]), &mut out);
        assert_eq!(&out[..n], &[0x88, 0x80, 1, 2, 3, 4]);
        let (_, payload) = decode(&out[..n]);
        assert_eq!(parse_close_payload(&payload), Ok(None));
    }

    #[test]
    fn reason_truncated_at_char_boundary() {
        let cases: [(String, usize); 6] = [
            ("a".repeat(200), 123),
            ("a".repeat(123), 123),
            ("a".repeat(122), 122),
            // 2-byte chars starting at even offsets: 123 falls mid-char.
            ("é".repeat(100), 122),
            // 'a' then 2-byte chars: 123 is a boundary.
            (format!("a{}", "é".repeat(100)), 123),
            // 4-byte chars: 31 * 4 = 124 > 123.
            ("😀".repeat(31), 120),
        ];
        for (reason, want) in cases {
            for mask in [None, Some([9, 9, 9, 9])] {
                let mut out = [0u8; MAX_CLOSE_FRAME_LEN];
                let n = encode_close_frame(POLICY_VIOLATION, &reason, mask, &mut out);
                let (h, payload) = decode(&out[..n]);
                assert!(h.payload_len <= MAX_CONTROL_PAYLOAD as u64);
                let (code, got) = parse_close_payload(&payload).unwrap().unwrap();
                assert_eq!(code, POLICY_VIOLATION);
                assert_eq!(got.len(), want);
                assert!(reason.starts_with(got));
            }
        }
        assert_eq!(truncate_at_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_at_char_boundary("héllo", 3), "hé");
        assert_eq!(truncate_at_char_boundary("héllo", 100), "héllo");
        assert_eq!(truncate_at_char_boundary("😀", 3), "");
        assert_eq!(truncate_at_char_boundary("", 0), "");
    }

    #[test]
    fn close_state_transitions() {
        use CloseState::*;
        assert_eq!(CloseState::default(), Open);
        // We close first.
        let s = Open.on_close_sent();
        assert_eq!(s, SentByUs);
        assert!(!s.can_send_data() && s.can_receive_data() && !s.must_send_close());
        assert_eq!(s.on_close_sent(), SentByUs);
        let s = s.on_close_received();
        assert_eq!(s, Acknowledged);
        assert!(s.is_closed() && !s.can_send_data() && !s.can_receive_data());
        // The peer closes first.
        let s = Open.on_close_received();
        assert_eq!(s, ReceivedFromPeer);
        assert!(s.can_send_data() && !s.can_receive_data() && s.must_send_close());
        assert!(!s.is_closed());
        assert_eq!(s.on_close_received(), ReceivedFromPeer);
        assert_eq!(s.on_close_sent(), Acknowledged);
        // Terminal.
        assert_eq!(Acknowledged.on_close_sent(), Acknowledged);
        assert_eq!(Acknowledged.on_close_received(), Acknowledged);
        assert!(Open.can_send_data() && Open.can_receive_data() && !Open.is_closed());
    }
}
