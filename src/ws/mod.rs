//! RFC 6455, the protocol alone: pure codecs with no sockets and nothing else
//! of ours.
//!
//! The relay streams frames through bounded buffers and transforms them in
//! place, so the frame, mask, UTF-8 and close paths never allocate:
//!
//! - [`handshake`]: checks a client's opening handshake, derives
//!   `Sec-WebSocket-Accept`, and helps build the proxy's upstream request.
//! - [`frame`]: the frame header codec; `Ok(None)` means "need more bytes".
//! - [`mask`]: word-at-a-time (un)masking, chunk by chunk, and one-pass
//!   re-masking with combined keys.
//! - [`utf8`]: incremental, fail-fast UTF-8 validation of text messages.
//! - [`close`]: close codes, close payloads and the closing handshake state.
//! - [`error`]: [`ProtocolError`], each violation with the close code it earns.

pub mod close;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use error::ProtocolError;
pub use frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
