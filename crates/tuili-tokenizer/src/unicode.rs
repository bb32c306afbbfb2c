//! Unicode facts the pre-tokenizers need: a general-category flag per code point and the
//! GPT-2 byte <-> printable-character map.
//!
//! llama.cpp classifies code points with its own table generated from `UnicodeData.txt`
//! (letter = `L*`, number = `N*`, ...) and the `White_Space` property. We take the same
//! categories from `regex-syntax`'s Unicode tables, so no data file is vendored here.

use std::sync::OnceLock;

/// `\p{N}`
pub(crate) const NUMBER: u8 = 1 << 0;
/// `\p{L}`
pub(crate) const LETTER: u8 = 1 << 1;
/// `\p{P}`
pub(crate) const PUNCTUATION: u8 = 1 << 2;
/// `\p{M}` (llama.cpp calls it "accent mark")
pub(crate) const ACCENT_MARK: u8 = 1 << 3;
/// `\p{S}`
pub(crate) const SYMBOL: u8 = 1 << 4;
/// The `White_Space` property; independent of the category bits.
pub(crate) const WHITESPACE: u8 = 1 << 5;

/// Code points with the `White_Space` property (PropList.txt), as llama.cpp's table has them.
const WHITE_SPACE: &[(u32, u32)] = &[
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
];

/// Sorted, disjoint `(first, last, category flag)` ranges; code points in no range have no
/// category flag (unassigned, control, separators, ...).
struct Table {
    ascii: [u8; 128],
    ranges: Vec<(u32, u32, u8)>,
}

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
        return Vec::new();
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => Vec::new(),
    }
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        // General categories are disjoint, so their ranges sort into one list.
        let mut ranges: Vec<(u32, u32, u8)> = Vec::new();
        for (pattern, flag) in [
            (r"\p{N}", NUMBER),
            (r"\p{L}", LETTER),
            (r"\p{P}", PUNCTUATION),
            (r"\p{M}", ACCENT_MARK),
            (r"\p{S}", SYMBOL),
        ] {
            ranges.extend(class_ranges(pattern).into_iter().map(|(a, b)| (a, b, flag)));
        }
        ranges.sort_unstable();
        let mut ascii = [0u8; 128];
        for (cp, slot) in ascii.iter_mut().enumerate() {
            *slot = lookup(&ranges, cp as u32) | white_space(cp as u32);
        }
        Table { ascii, ranges }
    })
}

fn white_space(cp: u32) -> u8 {
    if WHITE_SPACE.iter().any(|&(a, b)| a <= cp && cp <= b) {
        WHITESPACE
    } else {
        0
    }
}

fn lookup(ranges: &[(u32, u32, u8)], cp: u32) -> u8 {
    let i = ranges.partition_point(|&(_, last, _)| last < cp);
    match ranges.get(i) {
        Some(&(first, _, flags)) if first <= cp => flags,
        _ => 0,
    }
}

/// Category and white-space flags of one code point.
pub(crate) fn flags(c: char) -> u8 {
    let t = table();
    let cp = c as u32;
    if cp < 128 {
        t.ascii[cp as usize]
    } else {
        // White space may overlap a category (U+00A0 is Zs, U+0085 is Cc).
        lookup(&t.ranges, cp) | white_space(cp)
    }
}

/// The GPT-2 byte-to-character map: printable Latin-1 bytes stand for themselves, the
/// other 68 bytes move to U+0100.. in order, so every token is printable text.
pub(crate) fn byte_to_char() -> &'static [char; 256] {
    static MAP: OnceLock<[char; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = ['\0'; 256];
        let mut n = 0u32;
        for (b, slot) in map.iter_mut().enumerate() {
            let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
            let cp = if printable {
                b as u32
            } else {
                n += 1;
                255 + n
            };
            *slot = char::from_u32(cp).unwrap_or('\0');
        }
        map
    })
}

/// Inverse of [`byte_to_char`]; `None` for characters outside the 256-character alphabet.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    static MAP: OnceLock<Vec<i16>> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        // Every mapped character is below U+0144.
        let mut inv = vec![-1i16; 0x144];
        for (b, &c) in byte_to_char().iter().enumerate() {
            inv[c as usize] = b as i16;
        }
        inv
    });
    map.get(c as usize).and_then(|&b| u8::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_of_common_characters() {
        assert_eq!(flags('a'), LETTER);
        assert_eq!(flags('Z'), LETTER);
        assert_eq!(flags('7'), NUMBER);
        assert_eq!(flags('²'), NUMBER);
        assert_eq!(flags('你'), LETTER);
        assert_eq!(flags(' '), WHITESPACE);
        assert_eq!(flags('\n'), WHITESPACE);
        assert_eq!(flags('\u{3000}'), WHITESPACE);
        assert_eq!(flags('\u{A0}'), WHITESPACE);
        assert_eq!(flags(','), PUNCTUATION);
        assert_eq!(flags('$'), SYMBOL);
        assert_eq!(flags('\u{301}'), ACCENT_MARK);
        assert_eq!(flags('🎉'), SYMBOL);
        // Control characters and unassigned code points carry no flag.
        assert_eq!(flags('\u{1}'), 0);
        assert_eq!(flags('\u{E000}'), 0);
    }

    #[test]
    fn gpt2_byte_map_round_trips() {
        let map = byte_to_char();
        assert_eq!(map[b'a' as usize], 'a');
        assert_eq!(map[b' ' as usize], 'Ġ');
        assert_eq!(map[b'\n' as usize], 'Ċ');
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            assert!(seen.insert(map[b as usize]));
            assert_eq!(char_to_byte(map[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('你'), None);
    }
}
