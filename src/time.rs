//! The one place time is written and read as text: RFC 3339, in the
//! precisions the audit log, `/status`, `explain` traces and the consent's
//! `consented` / `validTo` use.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::clock::UnixTime;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `ts` as RFC 3339 UTC with milliseconds (`2026-03-02T08:16:40.123Z`),
/// written into `out` without allocating; the same text as
/// [`rfc3339`], which it falls back to outside years 1970-9999.
pub fn write_rfc3339(ts: SystemTime, out: &mut [u8; 24]) -> Option<&str> {
    let since_epoch = ts.duration_since(UNIX_EPOCH).ok()?;
    let secs = since_epoch.as_secs();
    let days = i64::try_from(secs / 86_400).ok()?;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let fields: [(usize, u64, usize); 7] = [
        (0, year as u64, 4),
        (5, month as u64, 2),
        (8, day as u64, 2),
        (11, rem / 3_600, 2),
        (14, rem % 3_600 / 60, 2),
        (17, rem % 60, 2),
        (20, u64::from(since_epoch.subsec_millis()), 3),
    ];
    out.copy_from_slice(b"0000-00-00T00:00:00.000Z");
    for (at, mut value, width) in fields {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    std::str::from_utf8(out).ok()
}

/// Unix seconds as RFC 3339 (as `explain` traces print them).
pub fn unix_rfc3339(t: f64) -> String {
    let secs = t.floor();
    let nanos = ((t - secs) * 1e9) as u32;
    chrono::DateTime::from_timestamp(secs as i64, nanos)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{t}"))
}

/// Unix seconds as RFC 3339 UTC with milliseconds (as `/status` shows key
/// refreshes); `None` out of chrono's range.
pub fn unix_rfc3339_millis(time: UnixTime) -> Option<String> {
    let seconds = time.floor();
    let nanos = ((time - seconds) * 1e9) as u32;
    chrono::DateTime::<chrono::Utc>::from_timestamp(seconds as i64, nanos.min(999_999_999))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Parses an RFC 3339 date-time with an offset (`Z` or `±hh:mm`) and 0-7
/// fractional digits into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let shape_ok = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape_ok {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=7).contains(&n) {
            return None;
        }
        rest = &fraction[n..];
    }
    let offset_ok = matches!(rest, [b'Z' | b'z'])
        || matches!(rest, [b'+' | b'-', h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()));
    if !offset_ok {
        return None;
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(parsed.timestamp() as f64 + f64::from(parsed.timestamp_subsec_nanos()) / 1e9)
}
