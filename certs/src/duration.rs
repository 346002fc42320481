use crate::{Error, Result};
use std::time::Duration;

/// Parses durations as operators write them: `24h`, `90m`, `30s`, `7d`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || Error::Duration(text.to_string());
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn rejects_bare_numbers_zero_and_junk() {
        for bad in ["", "24", "0h", "h", "1x", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
