//! The duration syntax of the rules: whole numbers with units, largest first, such as
//! `"500ms"`, `"5s"`, `"2m"`, `"1h 30m"`. Deliberately strict (no fractions, no words, no
//! ISO 8601) so that a typo is an error rather than a surprising wait.

use std::time::Duration;

/// Units from largest to smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 24 * 60 * 60 * 1000),
    ("h", 60 * 60 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Longer waits than a year are certainly typos, and the cap keeps every later
/// computation (instants in Unix millis) far from overflow.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// What the user should write, appended to every duration error.
pub const HINT: &str = "write whole numbers with units d, h, m, s or ms, largest first, \
                        such as \"500ms\", \"5s\", \"2m\" or \"1h 30m\"";

/// Parses a positive duration of at most [`MAX`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("the duration is empty".to_string());
    }
    let mut total_ms: u64 = 0;
    // Index into UNITS of the last unit used; each next unit must be smaller.
    let mut previous_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let (number, after_number) = rest.split_at(digits);
        let letters = after_number
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (unit, after_unit) = after_number.split_at(letters);
        let Some(unit_index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!("`{number}` has no unit")
            } else {
                format!("unknown unit `{unit}`")
            });
        };
        if previous_unit.is_some_and(|previous| previous >= unit_index) {
            return Err(format!("unit `{unit}` is repeated or out of order"));
        }
        previous_unit = Some(unit_index);
        let amount: u64 = number.parse().map_err(|_| too_long())?;
        let ms = amount
            .checked_mul(UNITS[unit_index].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(too_long)?;
        total_ms = ms;
        rest = after_unit.trim_start();
    }
    let duration = Duration::from_millis(total_ms);
    if duration.is_zero() {
        return Err("the duration must be longer than zero".to_string());
    }
    if duration > MAX {
        return Err(too_long());
    }
    Ok(duration)
}

fn too_long() -> String {
    format!("the duration is longer than the maximum of {}", format(MAX))
}

/// Writes a duration in the syntax [`parse`] reads, for messages (`"1m 30s"`).
pub fn format(duration: Duration) -> String {
    let mut left = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if left == 0 {
        return "0s".to_string();
    }
    let mut parts = Vec::new();
    for (name, unit_ms) in UNITS {
        let amount = left / unit_ms;
        if amount > 0 {
            parts.push(format!("{amount}{name}"));
            left %= unit_ms;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("5s", Duration::from_secs(5)),
            ("2m", Duration::from_secs(120)),
            ("24h", Duration::from_secs(24 * 3600)),
            ("1h 30m", Duration::from_secs(5400)),
            ("1h30m", Duration::from_secs(5400)),
            (" 1d 2h 3m 4s 5ms ", Duration::from_millis(93_784_005)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_ambiguous_or_pointless_forms() {
        for text in [
            "",
            "5",
            "1.5h",
            "5 s",
            "-5s",
            "5sec",
            "1m 1h",
            "1s 1s",
            "0s",
            "0ms",
            "PT5S",
            "366d",
            "99999999999999999999s",
            "5s,",
            "h",
        ] {
            assert!(parse(text).is_err(), "{text:?} should be refused");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,24}") {
            let _ = parse(&text);
        }

        #[test]
        fn format_round_trips(ms in 1u64..=MAX.as_millis() as u64) {
            let duration = Duration::from_millis(ms);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }
    }
}
