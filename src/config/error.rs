//! The one error type of configuration loading.
//!
//! Every message names where the problem is, in the form compilers use, so
//! that `wsgate check` can print it as is and an editor can jump to it:
//!
//! ```text
//! config/wsgate.yaml:12:7: routes[1].backend: unknown backend "ech" (known: echo, chat)
//! ```

use std::fmt;
use std::path::PathBuf;

/// A 1-based line and column in the config text.
///
/// Exists so that errors can point at the exact place of a mistake; columns
/// count characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a configuration could not be loaded.
///
/// Every variant names the file (or the `origin` given to
/// [`Config::from_yaml`](super::Config::from_yaml)); parse and validation
/// errors add the line and column, and validation errors the field path
/// (`routes[1].backend`, `backends.echo.servers[0].url`,
/// `listeners[0].tls.cert`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The path as given to [`Config::load`](super::Config::load).
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML, or does not fit the schema (unknown
    /// field, missing field, wrong type, misspelled `mode` …).
    #[error("{origin}{}: {message}", at(.position))]
    Parse {
        /// File name (or origin) of the text.
        origin: String,
        /// Where the parser stopped, when known.
        position: Option<Position>,
        /// The parser's message (it names the field where it can).
        message: String,
    },
    /// The YAML fits the schema but a value is not acceptable.
    #[error("{origin}{}: {field}: {message}", at(.position))]
    Invalid {
        /// File name (or origin) of the text.
        origin: String,
        /// Where the offending value is written, when known.
        position: Option<Position>,
        /// Path of the offending field, e.g. `routes[1].backend`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Formats `:line:column`, or nothing when the position is unknown.
fn at(position: &Option<Position>) -> String {
    match position {
        Some(p) => format!(":{}:{}", p.line, p.column),
        None => String::new(),
    }
}

impl ConfigError {
    /// Line and column of the problem, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { position, .. } | ConfigError::Invalid { position, .. } => {
                *position
            }
        }
    }

    /// Path of the offending field for validation errors, e.g.
    /// `routes[1].backend`.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let e = ConfigError::Invalid {
            origin: "config/wsgate.yaml".into(),
            position: Some(Position {
                line: 12,
                column: 7,
            }),
            field: "routes[1].backend".into(),
            message: "unknown backend \"ech\" (known: echo, chat)".into(),
        };
        assert_eq!(
            e.to_string(),
            "config/wsgate.yaml:12:7: routes[1].backend: unknown backend \"ech\" (known: echo, chat)"
        );
        assert_eq!(e.field(), Some("routes[1].backend"));
        assert_eq!(e.position().map(|p| p.line), Some(12));

        let e = ConfigError::Parse {
            origin: "x.yaml".into(),
            position: None,
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "x.yaml: boom");
        assert_eq!(e.field(), None);

        let e = ConfigError::Read {
            path: PathBuf::from("/nope/w.yaml"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(e.to_string(), "/nope/w.yaml: cannot read config file: gone");
        assert_eq!(e.position(), None);
    }
}
