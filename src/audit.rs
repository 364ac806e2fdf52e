//! The audit log (SPEC section 10): one JSON object a line on stdout per
//! decided request. Never a token; national identity numbers masked unless
//! `personal_data: clear`; with `omit` the `subject` field is left out.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::PersonalData;
use crate::gateway::rfc3339;
use crate::policy::{Authorized, DeniedFacts, SubjectType};

/// The facts of one decided request.
pub struct AuditLine<'a> {
    pub ts: SystemTime,
    pub request_id: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    /// The route template (`/income/{fnr}/{year}`), never the concrete path.
    pub path: &'a str,
    pub decision: &'a str,
    pub reason: &'a str,
    pub status: u16,
    pub authorized: Option<&'a Authorized>,
    pub denied: &'a DeniedFacts,
    pub duration_ms: f64,
}

#[derive(Serialize)]
struct Record<'a> {
    ts: &'a str,
    request_id: &'a str,
    route: &'a str,
    method: &'a str,
    path: &'a str,
    decision: &'a str,
    reason: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    consent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    duration_ms: f64,
}

/// Renders the JSON line (without newline).
pub fn render(line: &AuditLine<'_>, personal_data: PersonalData) -> String {
    let mut out = Vec::with_capacity(320);
    render_into(line, personal_data, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// `ts` as RFC 3339 UTC with milliseconds (`2026-03-02T08:16:40.123Z`),
/// written into `out` without allocating; the same text as
/// `gateway::rfc3339`, which it falls back to outside years 1970-9999.
fn format_ts(ts: SystemTime, out: &mut [u8; 24]) -> Option<&str> {
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

/// Renders the JSON line (without newline) into `out`.
fn render_into(line: &AuditLine<'_>, personal_data: PersonalData, out: &mut Vec<u8>) {
    let consent = line.authorized.and_then(|a| a.consent.as_ref());
    let consumer = line
        .authorized
        .and_then(|a| a.token.as_ref())
        .map(|t| t.consumer.as_str())
        .or(line.denied.consumer.as_deref());
    let consent_id = consent
        .map(|c| c.id.as_str())
        .or(line.denied.consent_id.as_deref());
    let (subject, is_person) = match consent {
        Some(c) => (
            Some(c.subject.as_str()),
            c.subject_type == SubjectType::Person,
        ),
        None => {
            let s = line.denied.subject.as_deref();
            (s, s.is_some_and(|s| s.len() == 11))
        }
    };
    let subject = subject.and_then(|s| match personal_data {
        PersonalData::Clear => Some(s.to_string()),
        PersonalData::Omit => None,
        PersonalData::Masked if is_person => Some(crate::policy::consent::mask(s)),
        PersonalData::Masked => Some(s.to_string()),
    });
    let mut ts_buffer = [0u8; 24];
    let ts_slow;
    let ts = match format_ts(line.ts, &mut ts_buffer) {
        Some(ts) => ts,
        None => {
            ts_slow = rfc3339(line.ts);
            ts_slow.as_str()
        }
    };
    let record = Record {
        ts,
        request_id: line.request_id,
        route: line.route,
        method: line.method,
        path: line.path,
        decision: line.decision,
        reason: line.reason,
        status: line.status,
        consent_id,
        consumer,
        subject,
        duration_ms: (line.duration_ms * 1000.0).round() / 1000.0,
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &record);
}

/// Writes one audit line to stdout: rendered into a buffer kept per thread,
/// then one `write` (stdout is line-buffered and the line ends in `\n`).
pub fn emit(line: &AuditLine<'_>, personal_data: PersonalData) {
    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    }
    let write = |buffer: &mut Vec<u8>| {
        buffer.clear();
        render_into(line, personal_data, buffer);
        buffer.push(b'\n');
        let _ = std::io::stdout().lock().write_all(buffer);
        if buffer.capacity() > 64 * 1024 {
            *buffer = Vec::with_capacity(512);
        }
    };
    let reused = BUFFER.try_with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            write(&mut buffer);
            true
        }
        Err(_) => false,
    });
    if reused != Ok(true) {
        write(&mut Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ConsentFacts, TokenFacts};

    fn authorized(subject: &str, kind: SubjectType) -> Authorized {
        Authorized {
            token: Some(TokenFacts {
                issuer: "i".into(),
                consumer: "0192:310497460".into(),
                supplier: None,
                client_id: None,
                scope: None,
                jti: None,
            }),
            consent: Some(ConsentFacts {
                id: "c-1".into(),
                from: format!("urn:altinn:person:identifier-no:{subject}"),
                subject_type: kind,
                subject: subject.into(),
                to: "0192:310497460".into(),
                consented: "x".into(),
                valid_to: "y".into(),
                resource: "r".into(),
                metadata: vec![],
            }),
        }
    }

    fn line<'a>(a: Option<&'a Authorized>, denied: &'a DeniedFacts) -> AuditLine<'a> {
        AuditLine {
            ts: SystemTime::UNIX_EPOCH,
            request_id: "rid",
            route: "income",
            method: "GET",
            path: "/income/{fnr}",
            decision: "allow",
            reason: "ok",
            status: 200,
            authorized: a,
            denied,
            duration_ms: 1.23456,
        }
    }

    #[test]
    fn masks_persons_by_default_and_keeps_organisations() {
        let a = authorized("17839116535", SubjectType::Person);
        let d = DeniedFacts::default();
        let v: serde_json::Value =
            serde_json::from_str(&render(&line(Some(&a), &d), PersonalData::Masked)).unwrap();
        assert_eq!(v["subject"], "178391*****");
        assert_eq!(v["consumer"], "0192:310497460");
        assert_eq!(v["consent_id"], "c-1");
        assert_eq!(v["path"], "/income/{fnr}");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["duration_ms"], 1.235);
        let org = authorized("302685991", SubjectType::Organization);
        let v: serde_json::Value =
            serde_json::from_str(&render(&line(Some(&org), &d), PersonalData::Masked)).unwrap();
        assert_eq!(v["subject"], "302685991");
    }

    #[test]
    fn clear_and_omit() {
        let a = authorized("17839116535", SubjectType::Person);
        let d = DeniedFacts::default();
        let clear = render(&line(Some(&a), &d), PersonalData::Clear);
        assert!(clear.contains("17839116535"));
        let omit = render(&line(Some(&a), &d), PersonalData::Omit);
        assert!(!omit.contains("\"subject\""));
        assert!(!omit.contains("1783911"));
        // `omit` leaves the field out whatever the subject's kind.
        let org = authorized("302685991", SubjectType::Organization);
        let omit = render(&line(Some(&org), &d), PersonalData::Omit);
        assert!(!omit.contains("\"subject\""));
        assert!(omit.contains("\"consumer\":\"0192:310497460\""));
    }

    #[test]
    fn timestamps_match_the_rfc3339_formatter() {
        use std::time::Duration;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut samples = vec![0, 951_782_400_123, 4_102_444_799_999, 253_402_300_799_999];
        for _ in 0..2_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            samples.push(state % 253_402_300_800_000);
        }
        for millis in samples {
            let t = UNIX_EPOCH + Duration::from_millis(millis) + Duration::from_nanos(999_999);
            let mut buffer = [0u8; 24];
            assert_eq!(
                format_ts(t, &mut buffer),
                Some(rfc3339(t).as_str()),
                "{millis}"
            );
        }
        let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(format_ts(before_epoch, &mut [0u8; 24]), None);
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(format_ts(far, &mut [0u8; 24]), None);
        let d = DeniedFacts::default();
        let mut l = line(None, &d);
        l.ts = far;
        let v: serde_json::Value = serde_json::from_str(&render(&l, PersonalData::Masked)).unwrap();
        assert_eq!(v["ts"], rfc3339(far));
    }

    #[test]
    fn denied_before_verification_has_no_identity() {
        let d = DeniedFacts::default();
        let v: serde_json::Value =
            serde_json::from_str(&render(&line(None, &d), PersonalData::Clear)).unwrap();
        assert!(v.get("subject").is_none());
        assert!(v.get("consumer").is_none());
    }
}
