use crate::{Error, Result};
use std::time::Duration;

/// Parses durations as operators write them: `24h`, `90m`, `30s`, `7d`, `1h30m`, `5ms`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || Error::Duration(text.to_string());
    let mut total_ms: u64 = 0;
    let mut digits = String::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit_ms = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total_ms == 0 {
        return Err(bad());
    }
    Ok(Duration::from_millis(total_ms))
}

/// The inverse of [`parse_duration`]: the largest unit that divides `d` evenly (`90m`, `5ms`),
/// so defaults print the way users type them.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    match units.iter().find(|(n, _)| ms > 0 && ms.is_multiple_of(*n)) {
        Some((n, unit)) => format!("{}{unit}", ms / n),
        None => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_what_it_parses() {
        for text in ["5ms", "1500ms", "30s", "90m", "1h", "36h", "7d"] {
            let d = parse_duration(text).expect(text);
            assert_eq!(format_duration(d), text);
        }
    }

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(
            parse_duration("24h").ok(),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_duration("90m").ok(), Some(Duration::from_secs(5_400)));
        assert_eq!(
            parse_duration("1h30m").ok(),
            Some(Duration::from_secs(5_400))
        );
        assert_eq!(
            parse_duration("2d").ok(),
            Some(Duration::from_secs(172_800))
        );
        assert_eq!(parse_duration("45s").ok(), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("5ms").ok(), Some(Duration::from_millis(5)));
        assert_eq!(
            parse_duration("1m30s250ms").ok(),
            Some(Duration::from_millis(90_250))
        );
    }

    #[test]
    fn rejects_bare_numbers_zero_and_junk() {
        for bad in [
            "",
            "24",
            "0h",
            "h",
            "1x",
            "-1h",
            "99999999999999999999d",
            "ms",
            "1mx",
            "0ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
