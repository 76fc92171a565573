//! The process's log output: one plain-text line per event, as
//! `TIME LEVEL message key=value …`, on stdout.
//!
//! It exists because the per-session line (`session closed …`) is written on
//! every session, so its cost counts in CPU per new session.
//! tracing-subscriber's default field formatter styles every field name and
//! `=` through `nu_ansi_term`, even with colour off, and writes integers
//! through the padding-aware `Display`. The [`PlainFields`] formatter writes
//! the same `key=value` text for about half the instructions. It also
//! escapes control characters in every value, not only in the message: a
//! value that carries a peer's bytes cannot start a new log line or send
//! terminal escapes.

use std::fmt::{self, Write};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: the filter from `RUST_LOG` (default
/// `info`), no target, colour only when stdout is a terminal,
/// [`PlainFields`] for the fields, and lines that cannot be written
/// dropped.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        // Colour codes only for a terminal: in a log file or a journal they
        // are noise.
        .with_ansi(std::io::stdout().is_terminal())
        .fmt_fields(PlainFields)
        // A log nobody reads any more (a closed pipe) must not stop the
        // proxy: by default a failed write is reported with `eprintln!`,
        // which panics when stderr is that same closed pipe, and takes the
        // logging task with it (the signal handler, for one).
        .log_internal_errors(false)
        .init();
}

/// Formats an event's fields as `message key=value …`: the message as
/// written, strings quoted as by `{:?}`, integers in decimal, anything else
/// as its `{:?}` (which is its `Display` for `%value` fields). Control
/// characters in any of them are written escaped (`\n`, `\u{1b}`). Fields
/// named `log.*` (metadata of records from the `log` crate, already shown
/// as the line's own metadata) are left out.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            out: writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes the fields of one event, in order, and keeps the first error.
struct Visitor<'writer> {
    out: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    /// Writes the separator and `name=` (nothing for the message) and
    /// returns whether the value is to be written.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            self.out.write_str(separator)
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write_all(&mut self.out, &[separator, name, "="])
        };
        self.result.is_ok()
    }

    /// Writes `value` with its control characters escaped.
    fn value(&mut self, value: fmt::Arguments<'_>) {
        self.result = Escaped(&mut self.out).write_fmt(value);
    }
}

impl Visit for Visitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.start(field) {
            if field.name() == "message" {
                self.result = Escaped(&mut self.out).write_str(value);
            } else {
                self.value(format_args!("{value:?}"));
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.value(format_args!("{value:?}"));
        }
    }
}

/// Writes several pieces in order.
fn write_all(out: &mut impl Write, pieces: &[&str]) -> fmt::Result {
    pieces.iter().try_for_each(|piece| out.write_str(piece))
}

/// A writer that passes text through with its control characters escaped
/// as by `char::escape_default`.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Bytes below 0x20 and DEL are the C0 controls; 0xC2 leads every C1
        // control (U+0080 to U+009F) and a few printable characters, which
        // the careful path below then passes through.
        if !text.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
            return self.0.write_str(text);
        }
        let mut rest = text;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| c.is_control()) {
            self.0.write_str(&rest[..at])?;
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line one event produces with [`PlainFields`], without time and
    /// level.
    fn line(event: impl FnOnce()) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .with_level(false)
            .fmt_fields(PlainFields)
            .finish();
        tracing::subscriber::with_default(subscriber, event);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn writes_the_message_then_key_value_pairs() {
        let peer: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let text = line(|| {
            tracing::info!(
                client = %peer,
                route = "/chat",
                bytes = 18_446_744_073_709_551_615u64,
                close_code = -1i64,
                deflate = true,
                ratio = 0.5f64,
                "session closed"
            )
        });
        assert_eq!(
            text,
            "session closed client=127.0.0.1:4000 route=\"/chat\" \
             bytes=18446744073709551615 close_code=-1 deflate=true ratio=0.5\n"
        );
    }

    #[test]
    fn a_formatted_message_and_no_fields() {
        assert_eq!(line(|| tracing::warn!("left {}", 3)), "left 3\n");
        assert_eq!(line(|| tracing::info!(open = 2u64)), "open=2\n");
    }

    #[test]
    fn control_characters_are_escaped_in_every_value() {
        let hostile = "evil\nINFO forged line \u{1b}[31m\u{85}";
        let text = line(|| tracing::info!(header = %hostile, "got {}", hostile));
        assert_eq!(
            text,
            "got evil\\nINFO forged line \\u{1b}[31m\\u{85} \
             header=evil\\nINFO forged line \\u{1b}[31m\\u{85}\n"
        );
        // Printable characters that share the C1 lead byte pass unchanged.
        assert_eq!(line(|| tracing::info!(sign = %"§ ©", "x")), "x sign=§ ©\n");
    }

    #[test]
    fn log_crate_metadata_is_left_out() {
        let text = line(|| tracing::info!(log.target = "rustls", log.line = 7u64, "m"));
        assert_eq!(text, "m\n");
    }

    #[test]
    fn raw_identifiers_lose_their_prefix() {
        assert_eq!(line(|| tracing::info!(r#type = 1u64, "x")), "x type=1\n");
    }
}
