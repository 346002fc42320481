//! Istio's durations (`1.5s`, `100ms`, `1m`, `2h`), read in one place for every rule field
//! that carries one (outlier detection, route timeouts, retries, fault delays), with the
//! Envoy `google.protobuf.Duration` form the generators send.

use envoy_types::pb::google::protobuf::Duration as PbDuration;
use serde_json::Value as Json;
use std::time::Duration;

/// A duration as Istio's rules write it: a non-negative number (fractions allowed) with `h`,
/// `m`, `s` or `ms`. None for anything else (a bare number, another unit, a sign).
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    if num.starts_with(['-', '+']) {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Envoy's form of `d`.
pub fn to_envoy(d: Duration) -> PbDuration {
    // Whole milliseconds, as Istio's durations are (rounding away float noise).
    let ms = (d.as_nanos() + 500_000) / 1_000_000;
    PbDuration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// The JSON value `v` (a string) as Envoy's duration; None when unset or not a duration.
pub fn duration(v: &Json) -> Option<PbDuration> {
    parse(v.as_str()?).map(to_envoy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Istio's durations: `h`, `m`, `s`, `ms` with fractions; a bare number, a negative
    /// value or an unknown unit is refused.
    #[test]
    fn istio_durations() {
        let d = |s: &str| duration(&json!(s)).map(|d| (d.seconds, d.nanos));
        assert_eq!(d("1s"), Some((1, 0)));
        assert_eq!(d("0.5s"), Some((0, 500_000_000)));
        assert_eq!(d("100ms"), Some((0, 100_000_000)));
        assert_eq!(d("1.5m"), Some((90, 0)));
        assert_eq!(d("2h"), Some((7200, 0)));
        assert_eq!(d("10"), None);
        assert_eq!(d("-1s"), None);
        assert_eq!(d("1d"), None);
        assert_eq!(duration(&json!(5)), None);
        assert_eq!(parse("0.5s"), Some(Duration::from_millis(500)));
    }
}
