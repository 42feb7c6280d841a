//! Wall-clock time as nanoseconds and its RFC 3339 rendering, without a date crate.
//!
//! CRI log lines carry Go's `time.RFC3339Nano` layout (`2006-01-02T15:04:05.999999999Z07:00`):
//! the fraction drops trailing zeros and disappears entirely on a whole second. The kubelet parses
//! the timestamp with that layout, so we render UTC (`Z`) the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (CRI timestamps are in this unit).
pub fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        // A clock before 1970 is a broken clock; report the epoch rather than a negative time.
        Err(_) => 0,
    }
}

/// Appends `ns` (nanoseconds since the epoch, UTC) in Go's RFC3339Nano layout.
pub fn push_rfc3339_nano(out: &mut Vec<u8>, ns: i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    push_num(out, year, 4);
    out.push(b'-');
    push_num(out, month, 2);
    out.push(b'-');
    push_num(out, day, 2);
    out.push(b'T');
    push_num(out, sod / 3600, 2);
    out.push(b':');
    push_num(out, sod / 60 % 60, 2);
    out.push(b':');
    push_num(out, sod % 60, 2);
    if nanos != 0 {
        let mut digits = [0u8; 9];
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let mut len = 9;
        while len > 0 && digits[len - 1] == b'0' {
            len -= 1;
        }
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
    out.push(b'Z');
}

/// `push_rfc3339_nano` into a new string.
pub fn rfc3339_nano(ns: i64) -> String {
    let mut out = Vec::with_capacity(32);
    push_rfc3339_nano(&mut out, ns);
    String::from_utf8_lossy(&out).into_owned()
}

fn push_num(out: &mut Vec<u8>, value: i64, width: usize) {
    let s = value.to_string();
    for _ in s.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(s.as_bytes());
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_renders_without_fraction() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn trailing_zeros_of_the_fraction_are_dropped() {
        // 2024-02-29T23:59:59.1Z: a leap day, one tenth of a second.
        let ns = 1_709_251_199_100_000_000;
        assert_eq!(rfc3339_nano(ns), "2024-02-29T23:59:59.1Z");
        assert_eq!(rfc3339_nano(ns + 23), "2024-02-29T23:59:59.100000023Z");
    }

    #[test]
    fn full_nanosecond_precision() {
        assert_eq!(
            rfc3339_nano(1_234_567_890_123_456_789),
            "2009-02-13T23:31:30.123456789Z"
        );
    }

    #[test]
    fn dates_across_centuries() {
        // 2000-03-01 (after a leap century's February) and 2100-03-01 (non-leap century).
        assert_eq!(
            rfc3339_nano(951_868_800 * 1_000_000_000),
            "2000-03-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339_nano(4_107_542_400 * 1_000_000_000),
            "2100-03-01T00:00:00Z"
        );
    }

    #[test]
    fn matches_every_day_of_a_four_year_cycle() {
        // Walk day by day and check that the calendar advances consistently.
        let mut prev = civil_from_days(0);
        for d in 1..(4 * 366) {
            let cur = civil_from_days(d);
            let next_expected = if cur.2 == 1 {
                cur.1 == prev.1 % 12 + 1
            } else {
                cur.2 == prev.2 + 1 && cur.1 == prev.1
            };
            assert!(next_expected, "day {d}: {prev:?} -> {cur:?}");
            prev = cur;
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ns() > 1_577_836_800 * 1_000_000_000);
    }
}
