//! Incremental UTF-8 validation of text messages (RFC 6455 §8.1).
//!
//! A text message reaches the relay split across frames and, inside a frame,
//! across read chunks, and it is forwarded before it has ended. So the
//! validator sees the message piece by piece, keeps at most 3 bytes of a
//! character cut at a piece boundary, and fails in the very piece where the
//! message stops being a valid prefix (as the Autobahn "fail fast" cases
//! expect), without allocating. Bulk validation uses `simdutf8`.

/// The error of [`Utf8Validator`]: the bytes fed so far can never become
/// valid UTF-8. The relay answers it with close code 1007 (see
/// [`ProtocolError::InvalidUtf8`](super::ProtocolError::InvalidUtf8)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8")]
pub struct InvalidUtf8;

/// Incremental UTF-8 validator for one text message at a time.
///
/// Feed the message's bytes in any split with [`feed`](Self::feed), then
/// call [`finish`](Self::finish) at the end of the message. The outcome is
/// the same as validating the whole message at once, and an error is
/// reported by the first `feed` whose bytes make the message an impossible
/// prefix (e.g. `0xF5`, `0xC0`, or `0xED 0xA0`: surrogates and overlong
/// encodings fail on the byte that proves them).
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// Bytes of a character cut at the end of the last feed; only the first
    /// `len` are meaningful.
    carry: [u8; 4],
    /// How many bytes of `carry` are pending (0..=3).
    len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the message.
    ///
    /// Returns `Err(InvalidUtf8)` as soon as the bytes so far cannot be the
    /// prefix of valid UTF-8; the validator is then reset, ready for the next
    /// message.
    #[inline]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), InvalidUtf8> {
        let mut rest = bytes;
        if self.len > 0 {
            // Complete the carried character byte by byte.
            loop {
                let Some((&b, tail)) = rest.split_first() else {
                    return Ok(());
                };
                rest = tail;
                let n = usize::from(self.len);
                let Some(slot) = self.carry.get_mut(n) else {
                    // Unreachable: a pending sequence is never 4 bytes long.
                    self.reset();
                    return Err(InvalidUtf8);
                };
                *slot = b;
                self.len += 1;
                let pending = self.carry.get(..=n).unwrap_or(&[]);
                match core::str::from_utf8(pending) {
                    Ok(_) => {
                        self.len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_none() => {}
                    Err(_) => {
                        self.reset();
                        return Err(InvalidUtf8);
                    }
                }
            }
        }
        match simdutf8::compat::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                // A valid prefix cut short at the end: keep the 1-3 bytes.
                let tail = rest.get(e.valid_up_to()..).unwrap_or(&[]);
                match self.carry.get_mut(..tail.len()) {
                    Some(dst) if tail.len() < 4 => {
                        dst.copy_from_slice(tail);
                        // tail.len() < 4, so the cast is lossless.
                        self.len = tail.len() as u8;
                        Ok(())
                    }
                    _ => {
                        self.reset();
                        Err(InvalidUtf8)
                    }
                }
            }
            Err(_) => {
                self.reset();
                Err(InvalidUtf8)
            }
        }
    }

    /// Ends the message: `Err` if an incomplete character is pending. Resets
    /// the validator either way, ready for the next message.
    #[inline]
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let clean = self.is_clean();
        self.reset();
        if clean {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets any pending bytes, e.g. when a connection drops a message.
    #[inline]
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Whether no partial character is pending, i.e. the bytes fed so far
    /// are complete, valid UTF-8 on their own.
    #[inline]
    pub fn is_clean(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid and invalid inputs, including the Autobahn 6.x classics.
    fn corpus() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = [
            "",
            "hello",
            "Hello-µ@ßöäüàá-UTF-8!!",
            "κόσμε",
            "\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}",
            "𝄞 music",
            "\u{D7FF}\u{E000}\u{FFFD}",
            "a€b𝄞c",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let invalid: &[&[u8]] = &[
            &[0xF5],
            &[0xF8, 0x88, 0x80, 0x80, 0x80],
            &[0xFF],
            &[0xFE],
            &[0xC0],
            &[0xC0, 0x80],
            &[0xC1, 0xBF],
            &[0xE0, 0x80, 0x80],
            &[0xE0, 0x9F, 0xBF],
            &[0xF0, 0x80, 0x80, 0x80],
            &[0xF0, 0x8F, 0xBF, 0xBF],
            &[0xED, 0xA0, 0x80],
            &[0xED, 0xBF, 0xBF],
            &[0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0x80],
            &[0xBF],
            &[0x61, 0x80, 0x62],
            &[0xCE, 0xBA, 0xE1],
            &[0xCE, 0xBA, 0xE1, 0xBD],
            &[0xF0, 0x9F, 0x98],
            &[0xF0, 0x9F, 0x98, 0x61],
            &[0xE2, 0x82],
            &[0xE2, 0x82, 0xAC, 0x80],
            &[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0],
            &[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xF4, 0x90, 0x80],
            b"Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xC3\xA4\xC3\xBC\xC3\xA0\xC3\xA1-UTF-8!!\xF4\x90\x80\x80",
            &[0xC2, 0x41],
            &[0xE1, 0x80, 0x41],
            &[0xF1, 0x80, 0x80, 0x41],
        ];
        v.extend(invalid.iter().map(|b| b.to_vec()));
        v
    }

    /// The length of the shortest prefix of `s` that std proves invalid.
    fn first_invalid_prefix(s: &[u8]) -> Option<usize> {
        (1..=s.len())
            .find(|&p| matches!(std::str::from_utf8(&s[..p]), Err(e) if e.error_len().is_some()))
    }

    /// Feeds `s` split at `cuts` and checks the outcome and fail-fast point.
    fn check_split(s: &[u8], cuts: &[usize]) {
        let expect_ok = std::str::from_utf8(s).is_ok();
        let bad_at = first_invalid_prefix(s);
        let mut v = Utf8Validator::new();
        let mut start = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(s.len());
        for &end in &bounds {
            let r = v.feed(&s[start..end]);
            match bad_at {
                // The piece containing the proving byte must fail, earlier ones not.
                Some(p) if p > start && p <= end => {
                    assert_eq!(
                        r,
                        Err(InvalidUtf8),
                        "{s:x?} cuts {cuts:?}: piece {start}..{end}"
                    );
                    assert!(v.is_clean());
                    assert!(!expect_ok);
                    return;
                }
                _ => assert_eq!(r, Ok(()), "{s:x?} cuts {cuts:?}: piece {start}..{end}"),
            }
            start = end;
        }
        assert_eq!(v.finish().is_ok(), expect_ok, "{s:x?} cuts {cuts:?}");
        assert!(v.is_clean());
    }

    #[test]
    fn whole_messages_agree_with_std() {
        for s in corpus() {
            check_split(&s, &[]);
        }
    }

    #[test]
    fn every_two_and_three_piece_split_agrees_with_std() {
        for s in corpus() {
            for i in 0..=s.len() {
                check_split(&s, &[i]);
                for j in i..=s.len() {
                    check_split(&s, &[i, j]);
                }
            }
        }
    }

    #[test]
    fn every_fixed_piece_size_agrees_with_std() {
        for s in corpus() {
            for size in 1..=s.len().max(1) {
                let cuts: Vec<usize> = (1..)
                    .map(|k| k * size)
                    .take_while(|&c| c < s.len())
                    .collect();
                check_split(&s, &cuts);
            }
        }
    }

    #[test]
    fn all_two_byte_sequences() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let s = [a, b];
                check_split(&s, &[]);
                check_split(&s, &[1]);
            }
        }
    }

    #[test]
    fn boundary_three_and_four_byte_sequences() {
        let conts = [
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xF4, 0xFF,
        ];
        for lead in 0xC0..=0xFFu8 {
            for &b in &conts {
                for &c in &conts {
                    let s = [lead, b, c];
                    for i in 0..=3 {
                        check_split(&s, &[i]);
                    }
                    check_split(&s, &[1, 2]);
                    for &d in &[0x41u8, 0x80, 0xBF, 0xC0] {
                        let s = [lead, b, c, d];
                        check_split(&s, &[1, 2, 3]);
                        check_split(&s, &[2]);
                    }
                }
            }
        }
    }

    #[test]
    fn pseudo_random_inputs() {
        // Deterministic LCG; a bias towards bytes >= 0x80 makes multibyte
        // sequences (valid and not) common.
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let pieces: [&[u8]; 6] = [
            "a".as_bytes(),
            "é".as_bytes(),
            "€".as_bytes(),
            "𝄞".as_bytes(),
            &[0xED],
            &[0x80],
        ];
        for _ in 0..3000 {
            let n = (next() % 12) as usize;
            let mut s = Vec::new();
            for _ in 0..n {
                if next() % 8 == 0 {
                    s.push(next() as u8);
                } else {
                    s.extend_from_slice(pieces[(next() % 6) as usize]);
                }
            }
            let mut cuts: Vec<usize> = (0..(next() % 4))
                .map(|_| (next() as usize) % (s.len() + 1))
                .collect();
            cuts.sort_unstable();
            check_split(&s, &cuts);
        }
    }

    #[test]
    fn fails_fast_on_impossible_prefixes() {
        for bad in [
            &[0xF5u8][..],
            &[0xC0],
            &[0xC1],
            &[0xFF],
            &[0x80],
            &[0xED, 0xA0],
            &[0xE0, 0x80],
            &[0xF0, 0x80],
            &[0xF4, 0x90],
        ] {
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(bad), Err(InvalidUtf8), "{bad:x?}");
        }
        // Byte by byte: the surrogate fails on its second byte.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.feed(&[0xED]), Ok(()));
        assert!(!v.is_clean());
        assert_eq!(v.feed(&[0xA0]), Err(InvalidUtf8));
        assert!(v.is_clean());
    }

    #[test]
    fn finish_reports_truncation_and_resets() {
        let mut v = Utf8Validator::new();
        assert!(v.is_clean());
        assert_eq!(v.feed(&[0xF0, 0x9F]), Ok(()));
        assert!(!v.is_clean());
        assert_eq!(v.feed(&[]), Ok(()));
        assert!(!v.is_clean());
        assert_eq!(v.feed(&[0x98]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert!(v.is_clean());
        // Reusable for the next message.
        assert_eq!(v.feed("ok😀".as_bytes()), Ok(()));
        assert_eq!(v.finish(), Ok(()));
        // reset drops a pending sequence.
        assert_eq!(v.feed(&[0xE2]), Ok(()));
        v.reset();
        assert!(v.is_clean());
        assert_eq!(v.feed(b"x"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn reusable_after_error() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xC0, 0x80]), Err(InvalidUtf8));
        assert_eq!(v.feed("fine".as_bytes()), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}
