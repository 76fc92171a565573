//! Durations and sizes as operators write them: `30s`, `500ms`, `64KiB`.
//!
//! Exists so that every timeout and limit in the config file reads the same
//! way and is checked the same way; the parsers here know nothing about
//! fields or lines (the validator adds those to the message).
//!
//! - Durations need a unit: `ms`, `s`, `m` (minutes), `h`. A bare number is
//!   refused because `30` could mean seconds or milliseconds. Whole numbers
//!   only (`1500ms`, not `1.5s`), at most one year.
//! - Sizes are a whole number of bytes, optionally followed by a unit:
//!   `B`; binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); decimal `KB`,
//!   `MB`, `GB`, `TB` (powers of 1000). Units are case-sensitive, so `kb` or
//!   `mib` are refused rather than guessed.
//!
//! A space between number and unit is allowed (`64 KiB`).

use std::time::Duration;

/// The units a duration may be written in, for messages.
pub const DURATION_UNITS: &str = "ms, s, m, h";

/// The units a size may be written in, for messages.
pub const SIZE_UNITS: &str = "B, KiB, MiB, GiB, TiB, KB, MB, GB, TB, or a plain number of bytes";

/// The longest duration accepted anywhere in the config (one year).
///
/// Exists so that no later `Instant + duration` can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a duration or size could not be read.
///
/// The message says what was expected; the validator prefixes it with the
/// file, line and field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Nothing was written.
    #[error("empty value: expected {expected}")]
    Empty {
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A duration was written without a unit.
    #[error(
        "{text:?} has no unit: write a duration such as 30s or 500ms (units: {DURATION_UNITS})"
    )]
    MissingUnit {
        /// The text as written.
        text: String,
    },
    /// The unit is not one of the allowed ones.
    #[error("{text:?}: unknown unit {unit:?} (allowed: {allowed})")]
    UnknownUnit {
        /// The text as written.
        text: String,
        /// The unit part of it.
        unit: String,
        /// The allowed units.
        allowed: &'static str,
    },
    /// The text does not start with a whole, non-negative number.
    #[error("{text:?} is not a whole number followed by a unit: expected {expected}")]
    Malformed {
        /// The text as written.
        text: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The value does not fit.
    #[error("{text:?} is too large (at most {max})")]
    TooLarge {
        /// The text as written.
        text: String,
        /// The largest value accepted, in words.
        max: &'static str,
    },
}

const DURATION_EXPECTED: &str = "a duration such as 30s, 500ms, 5m or 1h";
const SIZE_EXPECTED: &str = "a size such as 64KiB, 16MiB, 1GB or a number of bytes";

/// Splits `"64 KiB"` into `("64", "KiB")`; the number part is ASCII digits.
fn split(text: &str) -> (&str, &str) {
    let end = text
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(text.len(), |(i, _)| i);
    let (number, rest) = text.split_at(end);
    (number, rest.trim_start())
}

/// Reads the number part, reporting overflow and malformed input.
fn number(
    text: &str,
    digits: &str,
    expected: &'static str,
    max: &'static str,
) -> Result<u64, UnitError> {
    if digits.is_empty() {
        return Err(UnitError::Malformed {
            text: text.to_owned(),
            expected,
        });
    }
    digits.parse::<u64>().map_err(|_| UnitError::TooLarge {
        text: text.to_owned(),
        max,
    })
}

/// Parses a duration such as `30s`, `500ms`, `5m` or `1h`.
///
/// A unit is required; the result is at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    const MAX: &str = "one year (8760h)";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty {
            expected: DURATION_EXPECTED,
        });
    }
    let (digits, unit) = split(trimmed);
    let n = number(trimmed, digits, DURATION_EXPECTED, MAX)?;
    let millis_per_unit: u64 = match unit {
        "" => {
            return Err(UnitError::MissingUnit {
                text: trimmed.to_owned(),
            })
        }
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            // `1.5s` would otherwise read as the unknown unit ".5s".
            if other.starts_with(['.', ',']) {
                return Err(UnitError::Malformed {
                    text: trimmed.to_owned(),
                    expected: "a whole number with a unit, e.g. 1500ms rather than 1.5s",
                });
            }
            return Err(UnitError::UnknownUnit {
                text: trimmed.to_owned(),
                unit: other.to_owned(),
                allowed: DURATION_UNITS,
            });
        }
    };
    let too_large = || UnitError::TooLarge {
        text: trimmed.to_owned(),
        max: MAX,
    };
    let millis = n.checked_mul(millis_per_unit).ok_or_else(too_large)?;
    let duration = Duration::from_millis(millis);
    if duration > MAX_DURATION {
        return Err(too_large());
    }
    Ok(duration)
}

/// Parses a size such as `64KiB`, `16MiB`, `1GB` or `4096` (bytes).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    const MAX: &str = "16 EiB, 2^64-1 bytes";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty {
            expected: SIZE_EXPECTED,
        });
    }
    let (digits, unit) = split(trimmed);
    let n = number(trimmed, digits, SIZE_EXPECTED, MAX)?;
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            if other.starts_with(['.', ',']) {
                return Err(UnitError::Malformed {
                    text: trimmed.to_owned(),
                    expected: "a whole number with a unit, e.g. 1536KiB rather than 1.5MiB",
                });
            }
            return Err(UnitError::UnknownUnit {
                text: trimmed.to_owned(),
                unit: other.to_owned(),
                allowed: SIZE_UNITS,
            });
        }
    };
    n.checked_mul(factor).ok_or(UnitError::TooLarge {
        text: trimmed.to_owned(),
        max: MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
    }

    #[test]
    fn durations_refused() {
        assert_eq!(
            parse_duration("30"),
            Err(UnitError::MissingUnit { text: "30".into() })
        );
        let e = parse_duration("30").unwrap_err().to_string();
        assert!(e.contains("ms, s, m, h"), "{e}");
        assert_eq!(
            parse_duration("3d"),
            Err(UnitError::UnknownUnit {
                text: "3d".into(),
                unit: "d".into(),
                allowed: DURATION_UNITS
            })
        );
        assert!(matches!(
            parse_duration("30S"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1.5s"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(parse_duration("  "), Err(UnitError::Empty { .. })));
        assert!(matches!(
            parse_duration("8761h"),
            Err(UnitError::TooLarge { .. })
        ));
        // Overflows u64 while multiplying, and while reading the digits.
        assert!(matches!(
            parse_duration("18446744073709551615h"),
            Err(UnitError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999999s"),
            Err(UnitError::TooLarge { .. })
        ));
        // Non-ASCII input must not panic (char boundaries).
        assert!(parse_duration("5ä").is_err());
        assert!(parse_duration("٣s").is_err());
    }

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("64 KiB"), Ok(65536));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn sizes_refused() {
        let e = parse_size("64kb").unwrap_err();
        assert_eq!(
            e,
            UnitError::UnknownUnit {
                text: "64kb".into(),
                unit: "kb".into(),
                allowed: SIZE_UNITS
            }
        );
        assert!(e.to_string().contains("KiB, MiB"), "{e}");
        assert!(matches!(
            parse_size("MiB"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(parse_size("-1"), Err(UnitError::Malformed { .. })));
        assert!(matches!(
            parse_size("1.5MiB"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(parse_size(""), Err(UnitError::Empty { .. })));
        assert!(matches!(
            parse_size("18446744073709551616"),
            Err(UnitError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_size("17179869184GiB"),
            Err(UnitError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_size("16777216TiB"),
            Err(UnitError::TooLarge { .. })
        ));
        assert!(parse_size("1 MiB extra").is_err());
    }
}
