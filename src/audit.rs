//! The audit log (SPEC section 10): one JSON object a line on stdout per
//! decided request. Never a token; national identity numbers masked unless
//! `personal_data: clear`; with `omit` the `subject` field is left out.

use std::io::Write;
use std::time::SystemTime;

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
    ts: String,
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

/// Masks an 11-digit national identity number as `259229*****`; other
/// identifiers (organisation numbers) are not personal and stay as they are.
pub fn mask_subject(subject: &str) -> String {
    if subject.len() == 11 && subject.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}*****", &subject[..6])
    } else {
        subject.to_string()
    }
}

/// Renders the JSON line (without newline).
pub fn render(line: &AuditLine<'_>, personal_data: PersonalData) -> String {
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
        PersonalData::Masked if is_person => Some(mask_subject(s)),
        PersonalData::Masked => Some(s.to_string()),
    });
    let record = Record {
        ts: rfc3339(line.ts),
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
    serde_json::to_string(&record).unwrap_or_default()
}

/// Writes one audit line to stdout.
pub fn emit(line: &AuditLine<'_>, personal_data: PersonalData) {
    let mut text = render(line, personal_data);
    text.push('\n');
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(text.as_bytes());
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
    fn denied_before_verification_has_no_identity() {
        let d = DeniedFacts::default();
        let v: serde_json::Value =
            serde_json::from_str(&render(&line(None, &d), PersonalData::Clear)).unwrap();
        assert!(v.get("subject").is_none());
        assert!(v.get("consumer").is_none());
    }
}
