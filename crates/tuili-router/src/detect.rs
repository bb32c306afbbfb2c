//! Privacy detectors: does a prompt hold an e-mail address, a phone number, a card number
//! (Luhn-checked), a national ID (US SSN, UK NINO, IBAN with its mod-97 check) or a secret
//! (API keys of the common providers, private-key blocks)? Patterns first, then a checksum
//! where the format has one, so that "order 4111 1111 1111 1112" is not a card.

use std::sync::{Arc, LazyLock};

use regex::Regex;

use crate::RouterError;

/// The built-in detector names.
pub const BUILTIN: [&str; 5] = ["email", "phone", "card", "id", "secret"];

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b").expect("email")
});
// An optional country code, then groups of digits split by space, dot, dash or parentheses.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}[\s.-]\d{3,4}(?:[\s.-]?\d{3,4})?\b",
    )
    .expect("phone")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("card"));
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{3})-(\d{2})-(\d{4})\b").expect("ssn"));
static NINO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
        .expect("nino")
});
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b").expect("iban")
});
static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----",
        r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
        r"|\bAKIA[0-9A-Z]{16}\b",
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}",
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}",
        r"|\bAIza[0-9A-Za-z_-]{35}",
        r"|\bhf_[A-Za-z0-9]{30,}",
        r#"|(?i)\b(?:api[_-]?key|secret|password|passwd|token)\s*[:=]\s*['"]?[A-Za-z0-9_\-/+.]{12,}"#,
    ))
    .expect("secret")
});

/// The Luhn check of a digit string (cards).
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

fn card(text: &str) -> bool {
    CARD.find_iter(text).any(|m| {
        let d = digits(m.as_str());
        (13..=19).contains(&d.len()) && luhn(&d)
    })
}

fn phone(text: &str) -> bool {
    // IBAN- and SSN-shaped runs are the ID detector's business.
    let masked = IBAN.replace_all(text, " ");
    let masked = SSN.replace_all(&masked, " ");
    let text: &str = &masked;
    let b = text.as_bytes();
    let part = |c: u8| c.is_ascii_digit() || b" .-()+".contains(&c);
    PHONE.find_iter(text).any(|m| {
        // Digits of the whole run around the match: a card-length run is not a phone.
        let (mut s, mut e) = (m.start(), m.end());
        while s > 0 && part(b[s - 1]) {
            s -= 1;
        }
        while e < b.len() && part(b[e]) {
            e += 1;
        }
        while s < e && b[s] == b' ' {
            s += 1;
        }
        while e > s && b[e - 1] == b' ' {
            e -= 1;
        }
        // Digits glued to letters (an IBAN, a part number) are not a phone number.
        let glued = |i: usize| b.get(i).is_some_and(u8::is_ascii_alphanumeric);
        if (s > 0 && glued(s - 1)) || glued(e) {
            return false;
        }
        (9..=15).contains(&digits(&text[s..e]).len())
    })
}

/// IBAN mod-97: move the first four characters to the end, letters become 10..35.
fn iban_ok(s: &str) -> bool {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let mut rem = 0u32;
    for c in s[4..].chars().chain(s[..4].chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn national_id(text: &str) -> bool {
    // SSN: no 000/666/9xx area, no 00 group, no 0000 serial.
    let ssn = SSN.captures_iter(text).any(|c| {
        let (a, g, s) = (&c[1], &c[2], &c[3]);
        a != "000" && a != "666" && !a.starts_with('9') && g != "00" && s != "0000"
    });
    ssn || NINO.is_match(text) || IBAN.find_iter(text).any(|m| iban_ok(m.as_str()))
}

#[derive(Debug, Clone)]
enum Kind {
    Email,
    Phone,
    Card,
    Id,
    Secret,
    Custom(Arc<Regex>),
}

/// A named set of detectors (built-in and `[[detector]]` patterns).
#[derive(Debug, Clone, Default)]
pub struct Detectors(Vec<(String, Kind)>);

impl Detectors {
    /// Builds the set `names`; `custom` is `(name, pattern, config key)` of `[[detector]]`s.
    /// Errors name `key` and the unknown name or the bad pattern.
    pub fn build(
        key: &str,
        names: &[String],
        custom: &[(String, String, String)],
    ) -> Result<Self, RouterError> {
        let mut out = Vec::new();
        for n in names {
            let kind = match n.as_str() {
                "email" => Kind::Email,
                "phone" => Kind::Phone,
                "card" => Kind::Card,
                "id" => Kind::Id,
                "secret" => Kind::Secret,
                other => match custom.iter().find(|(c, _, _)| c == other) {
                    Some((_, pattern, ckey)) => {
                        Kind::Custom(Arc::new(Regex::new(pattern).map_err(|e| {
                            RouterError::Config {
                                key: format!("{ckey}.pattern"),
                                why: e.to_string(),
                            }
                        })?))
                    }
                    None => {
                        let known: Vec<&str> = BUILTIN
                            .iter()
                            .copied()
                            .chain(custom.iter().map(|c| c.0.as_str()))
                            .collect();
                        return Err(RouterError::Config {
                            key: key.to_string(),
                            why: format!(
                                "unknown detector '{other}' (known: {})",
                                known.join(", ")
                            ),
                        });
                    }
                },
            };
            out.push((n.clone(), kind));
        }
        Ok(Detectors(out))
    }

    /// Names in order.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The names of the detectors that match `text`.
    pub fn scan(&self, text: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, k)| match k {
                Kind::Email => EMAIL.is_match(text),
                Kind::Phone => phone(text),
                Kind::Card => card(text),
                Kind::Id => national_id(text),
                Kind::Secret => SECRET.is_match(text),
                Kind::Custom(re) => re.is_match(text),
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Detectors {
        let names: Vec<String> = BUILTIN
            .iter()
            .map(|s| s.to_string())
            .chain(["emp".to_string()])
            .collect();
        Detectors::build(
            "k",
            &names,
            &[("emp".into(), r"EMP-\d{6}".into(), "detector[0]".into())],
        )
        .unwrap()
    }

    fn hits(t: &str) -> Vec<String> {
        all().scan(t)
    }

    #[test]
    fn each_detector_fires_on_its_kind_only() {
        assert_eq!(
            hits("write to jane.doe+x@mail.example.org today"),
            ["email"]
        );
        assert_eq!(hits("call me at +1 415-555-0132"), ["phone"]);
        assert_eq!(hits("call (020) 7946 0958"), ["phone"]);
        assert_eq!(hits("card 4111 1111 1111 1111 exp 12/29"), ["card"]);
        assert_eq!(hits("ssn 123-45-6789"), ["id"]);
        assert_eq!(hits("NINO AB 12 34 56 C"), ["id"]);
        assert_eq!(hits("pay to GB82 WEST 1234 5698 7654 32"), ["id"]);
        assert_eq!(hits("key sk-proj-abcdefghijklmnopqrstuvwx"), ["secret"]);
        assert_eq!(hits("AKIAIOSFODNN7EXAMPLE"), ["secret"]);
        assert_eq!(hits("-----BEGIN RSA PRIVATE KEY-----\nMIIE"), ["secret"]);
        assert_eq!(hits("password = hunter2hunter2!"), ["secret"]);
        assert_eq!(hits("badge EMP-123456"), ["emp"]);
    }

    #[test]
    fn near_misses_do_not_fire() {
        for t in [
            "What is 12 times 13?",
            "The meeting is on 2024-01-15 at 10:30.",
            "order 4111 1111 1111 1112",
            "ssn 000-12-3456 is not valid",
            "GB82 WEST 1234 5698 7654 33",
            "sk-short",
            "Write a Python function that adds two numbers.",
            "The year 1969 and the number 3.14159",
            "user at example dot com",
        ] {
            assert!(hits(t).is_empty(), "{t:?} -> {:?}", hits(t));
        }
    }

    #[test]
    fn luhn_known_values() {
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert!(!luhn(&[]));
    }

    #[test]
    fn unknown_names_and_bad_patterns_are_errors() {
        let e = Detectors::build("policy.private_detectors", &["mail".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("unknown detector 'mail'"), "{e}");
        let e = Detectors::build(
            "k",
            &["x".into()],
            &[("x".into(), "(".into(), "detector[2]".into())],
        )
        .unwrap_err();
        assert!(e.to_string().contains("detector[2].pattern"), "{e}");
    }
}
