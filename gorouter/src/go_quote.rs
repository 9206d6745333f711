//! Go's `strconv.Quote` for the values of an access-log line (A.14): printable ASCII copied
//! between quotes, everything else escaped as Go escapes it, an empty value written `"-"`.
//!
//! Nearly every value needs no escaping, so the check for that ([`is_plain`]) is the cost
//! every request pays, a dozen times per line: it looks at 16 bytes at a time.

/// Go's `strconv.Quote`, with an empty value written as `"-"`.
pub fn quote_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.extend_from_slice(b"\"-\"");
        return;
    }
    if is_plain(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    quote_escaped(out, bytes);
}

/// [`quote_bytes`] for a value with something to escape: kept out of line, as it is rare.
#[cold]
#[inline(never)]
fn quote_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\u{07}' => out.extend_from_slice(b"\\a"),
                '\u{08}' => out.extend_from_slice(b"\\b"),
                '\u{0c}' => out.extend_from_slice(b"\\f"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{0b}' => out.extend_from_slice(b"\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    push_hex_escape(out, b'x', c as u32, 2)
                }
                c if c.is_control() => push_hex_escape(out, b'u', c as u32, 4),
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        for &b in chunk.invalid() {
            push_hex_escape(out, b'x', b.into(), 2);
        }
    }
    out.push(b'"');
}

/// `\x7f` / `\u0085`: `kind`, then `value` in `width` lowercase hex digits.
fn push_hex_escape(out: &mut Vec<u8>, kind: u8, value: u32, width: u32) {
    out.push(b'\\');
    out.push(kind);
    for i in (0..width).rev() {
        out.push(b"0123456789abcdef"[(value >> (4 * i) & 0xf) as usize]);
    }
}

/// A byte Go's `strconv.Quote` copies as it is: printable ASCII other than `"` and `\`.
fn is_plain_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether every byte [`is_plain_byte`]. A value of 16 bytes or more is checked in blocks of
/// 16, the last block overlapping the one before instead of a byte-by-byte remainder; one of
/// 8 to 15 bytes as two overlapping words; a shorter one byte by byte.
pub fn is_plain(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len >= 16 {
        let mut start = 0;
        loop {
            if !block_is_plain(word_at(bytes, start), word_at(bytes, start + 8)) {
                return false;
            }
            start += 16;
            if start >= len {
                return true;
            }
            // The last block ends at the value's end, overlapping what was checked.
            start = start.min(len - 16);
        }
    }
    if len >= 8 {
        return word_is_plain(word_at(bytes, 0)) && word_is_plain(word_at(bytes, len - 8));
    }
    bytes.iter().all(|&b| is_plain_byte(b))
}

/// The 8 bytes at `at` as a little-endian word; callers keep `at + 8 <= bytes.len()`.
fn word_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Whether the 16 bytes `lo` then `hi` are all plain: four byte-wise compares and a mask.
#[cfg(target_arch = "x86_64")]
fn block_is_plain(lo: u64, hi: u64) -> bool {
    // SAFETY: SSE2 is part of x86_64 itself: every x86_64 CPU has it, so the function's
    // target feature needs no run-time check.
    unsafe { block_is_plain_sse2(lo, hi) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn block_is_plain_sse2(lo: u64, hi: u64) -> bool {
    use std::arch::x86_64::*;
    let v = _mm_set_epi64x(hi as i64, lo as i64);
    // Signed compare: 0x00-0x1f and every byte from 0x80 up (negative) are below 0x20.
    let control_or_high = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
    let del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
    let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
    let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
    let bad = _mm_or_si128(
        _mm_or_si128(control_or_high, del),
        _mm_or_si128(quote, backslash),
    );
    _mm_movemask_epi8(bad) == 0
}

#[cfg(not(target_arch = "x86_64"))]
fn block_is_plain(lo: u64, hi: u64) -> bool {
    word_is_plain(lo) && word_is_plain(hi)
}

/// Whether the 8 bytes of `w` are all plain, by word arithmetic.
fn word_is_plain(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether some byte of `w` is below `n` (n <= 0x80), or is zero; exact, no false alarms.
    let has_below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH != 0;
    // A byte of 0x7f or more: 0x7f + 1 and anything with its top bit set show in HIGH.
    // (A carry out of 0xff can only add a false alarm, which takes the slow path.)
    let high = (w.wrapping_add(ONES) | w) & HIGH != 0;
    !(high
        || has_below(w, 0x20)
        || has_below(w ^ (ONES * u64::from(b'"')), 1)
        || has_below(w ^ (ONES * u64::from(b'\\')), 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_and_word_checks_agree_with_the_byte_check() {
        // Every byte value at every position of values that take each path: bytes alone,
        // two overlapping words, one block, blocks with an overlapping last one.
        for len in [1usize, 7, 8, 9, 15, 16, 17, 31, 36, 40] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    assert_eq!(
                        is_plain(&v),
                        is_plain_byte(b),
                        "byte {b:#x} at {pos} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_word_check_agrees_with_the_byte_check_off_x86() {
        // The word arithmetic is what other architectures use for whole blocks too.
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut v = [b'a'; 8];
                v[pos] = b;
                assert_eq!(
                    word_is_plain(u64::from_le_bytes(v)),
                    is_plain_byte(b),
                    "byte {b:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn quote_escapes_like_go() {
        let mut s = Vec::new();
        quote_bytes(&mut s, b"a\"b\\c\n\x01\x7f\xff");
        assert_eq!(s, b"\"a\\\"b\\\\c\\n\\x01\\x7f\\xff\"");
    }

    #[test]
    fn quote_copies_printable_values_and_escapes_the_rest() {
        let mut s = Vec::new();
        quote_bytes(&mut s, b"curl/8.0 (x86_64; +https://x) ~");
        assert_eq!(s, b"\"curl/8.0 (x86_64; +https://x) ~\"");
        s.clear();
        quote_bytes(&mut s, "h\u{e9}llo \u{85}".as_bytes());
        assert_eq!(String::from_utf8(s).unwrap(), "\"h\u{e9}llo \\u0085\"");
    }

    #[test]
    fn an_empty_value_is_a_quoted_dash() {
        let mut s = Vec::new();
        quote_bytes(&mut s, b"");
        assert_eq!(s, b"\"-\"");
    }
}
