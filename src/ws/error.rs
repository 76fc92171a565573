//! Protocol violations a peer can commit after the opening handshake.
//!
//! The relay needs one answer for every broken frame: which close code to send
//! to both sides. [`ProtocolError`] is a flat, allocation-free enum (it is
//! produced on the hot path) whose [`close_code`](ProtocolError::close_code)
//! gives that answer and whose `Display` text is short enough to travel as the
//! close reason (at most 123 bytes).

use super::close;

/// A violation of RFC 6455 framing rules by a peer.
///
/// Every variant is fatal for the connection: the caller sends a close frame
/// with [`close_code`](Self::close_code) (and the `Display` text as reason) and
/// stops reading from the offending peer. The doc of each variant names the
/// close code the peer gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The frame uses an opcode reserved for future use (3-7, 0xB-0xF).
    /// Peer gets 1002.
    #[error("reserved opcode {0}")]
    ReservedOpcode(u8),
    /// A control frame (close, ping, pong) has FIN clear; control frames must
    /// not be fragmented (§5.5). Peer gets 1002.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame announces a payload longer than 125 bytes (§5.5).
    /// Peer gets 1002.
    #[error("control frame payload too long ({0} bytes)")]
    ControlFrameTooLong(u64),
    /// The 64-bit payload length has its most significant bit set (§5.2).
    /// Peer gets 1002.
    #[error("invalid payload length")]
    InvalidLength,
    /// RSV bits (low 3 bits, RSV1 = 0b100) are set that no negotiated
    /// extension defines. Peer gets 1002.
    #[error("reserved bits {0:#05b} set")]
    ReservedBits(u8),
    /// A client sent a frame without a mask (§5.1). Peer gets 1002.
    #[error("unmasked client frame")]
    UnmaskedFrame,
    /// A server sent a masked frame (§5.1). Peer gets 1002.
    #[error("masked server frame")]
    MaskedFrame,
    /// A continuation frame arrived with no fragmented message in progress.
    /// Peer gets 1002.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message is still
    /// in progress. Peer gets 1002.
    #[error("data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A close frame carries a 1-byte payload, which cannot hold a status
    /// code (§5.5.1). Peer gets 1002.
    #[error("close payload of 1 byte")]
    InvalidClosePayload,
    /// A close frame carries a status code that may not appear on the wire
    /// (see [`close::is_allowed_on_wire`]). Peer gets 1002.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A text message or a close reason is not valid UTF-8 (§8.1).
    /// Peer gets 1007.
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8,
    /// A single frame is larger than the configured limit. Peer gets 1009.
    #[error("frame of {len} bytes exceeds limit of {max}")]
    FrameTooLarge {
        /// The announced payload length of the frame.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// A (possibly fragmented) message is larger than the configured limit.
    /// Peer gets 1009.
    #[error("message of {len} bytes exceeds limit of {max}")]
    MessageTooLarge {
        /// The message length so far, including the frame that crossed the limit.
        len: u64,
        /// The configured limit.
        max: u64,
    },
}

impl ProtocolError {
    /// The close code to send for this violation: 1002 for protocol errors,
    /// 1007 for invalid UTF-8, 1009 for frames or messages that are too large.
    #[inline]
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 => close::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                close::MESSAGE_TOO_BIG
            }
            ProtocolError::ReservedOpcode(_)
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::ControlFrameTooLong(_)
            | ProtocolError::InvalidLength
            | ProtocolError::ReservedBits(_)
            | ProtocolError::UnmaskedFrame
            | ProtocolError::MaskedFrame
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::InvalidClosePayload
            | ProtocolError::InvalidCloseCode(_) => close::PROTOCOL_ERROR,
        }
    }
}

impl From<super::utf8::InvalidUtf8> for ProtocolError {
    #[inline]
    fn from(_: super::utf8::InvalidUtf8) -> Self {
        ProtocolError::InvalidUtf8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, with the largest field values, so Display lengths are worst case.
    fn all() -> Vec<ProtocolError> {
        vec![
            ProtocolError::ReservedOpcode(0xF),
            ProtocolError::FragmentedControlFrame,
            ProtocolError::ControlFrameTooLong(u64::MAX),
            ProtocolError::InvalidLength,
            ProtocolError::ReservedBits(0b111),
            ProtocolError::UnmaskedFrame,
            ProtocolError::MaskedFrame,
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::InvalidClosePayload,
            ProtocolError::InvalidCloseCode(u16::MAX),
            ProtocolError::InvalidUtf8,
            ProtocolError::FrameTooLarge {
                len: u64::MAX,
                max: u64::MAX,
            },
            ProtocolError::MessageTooLarge {
                len: u64::MAX,
                max: u64::MAX,
            },
        ]
    }

    #[test]
    fn close_codes() {
        for e in all() {
            let want = match e {
                ProtocolError::InvalidUtf8 => 1007,
                ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => 1009,
                _ => 1002,
            };
            assert_eq!(e.close_code(), want, "{e:?}");
            assert!(close::is_allowed_on_wire(e.close_code()));
        }
    }

    #[test]
    fn display_fits_in_a_close_reason() {
        for e in all() {
            let s = e.to_string();
            assert!(!s.is_empty());
            assert!(s.len() <= 123, "{s:?} is {} bytes", s.len());
        }
    }

    #[test]
    fn display_examples() {
        assert_eq!(
            ProtocolError::ReservedOpcode(3).to_string(),
            "reserved opcode 3"
        );
        assert_eq!(
            ProtocolError::InvalidUtf8.to_string(),
            "invalid UTF-8 in text message"
        );
        assert_eq!(
            ProtocolError::ReservedBits(0b100).to_string(),
            "reserved bits 0b100 set"
        );
        assert_eq!(
            ProtocolError::FrameTooLarge { len: 10, max: 5 }.to_string(),
            "frame of 10 bytes exceeds limit of 5"
        );
    }

    #[test]
    fn from_invalid_utf8() {
        let e: ProtocolError = super::super::utf8::InvalidUtf8.into();
        assert_eq!(e, ProtocolError::InvalidUtf8);
    }
}
