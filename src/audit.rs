//! The audit log (SPEC sections 10 and 13): one JSON object a line on stdout
//! per decided request, written by one writer thread fed by a bounded queue
//! (the request path never waits on stdout). Never a token; national
//! identity numbers masked (last two digits) unless `personal_data: clear`;
//! `pseudonymized` gives a keyed HMAC; with `omit` `subject` is left out.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde::Serialize;

use crate::config::{Audit, PersonalData};
use crate::policy::{Authorized, DeniedFacts, SubjectType};
use crate::time::{rfc3339, write_rfc3339};

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
    /// The W3C trace id of the request, when it has one.
    pub trace_id: Option<&'a str>,
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
    supplier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    duration_ms: f64,
}

/// Renders the JSON line (without newline).
pub fn render(line: &AuditLine<'_>, audit: &Audit) -> String {
    let mut out = Vec::with_capacity(320);
    render_into(line, audit, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Renders the JSON line (without newline) into `out`.
fn render_into(line: &AuditLine<'_>, audit: &Audit, out: &mut Vec<u8>) {
    let consent = line.authorized.and_then(|a| a.consent.as_ref());
    let token = line.authorized.and_then(|a| a.token.as_ref());
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
    let subject = subject.and_then(|s| match audit.personal_data {
        PersonalData::Clear => Some(s.to_string()),
        PersonalData::Omit => None,
        _ if !is_person => Some(s.to_string()),
        PersonalData::Masked => Some(mask(s)),
        PersonalData::Pseudonymized => audit.pseudonym_key.as_deref().map(|k| pseudonym(k, s)),
    });
    let mut ts_buffer = [0u8; 24];
    let ts_slow;
    let ts = match write_rfc3339(line.ts, &mut ts_buffer) {
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
        supplier: token.and_then(|t| t.supplier.as_deref()),
        client_id: token.and_then(|t| t.client_id.as_deref()),
        token_id: token.and_then(|t| t.jti.as_deref()),
        resource: consent.map(|c| c.resource.as_str()),
        subject,
        trace_id: line.trace_id,
        duration_ms: (line.duration_ms * 1000.0).round() / 1000.0,
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &record);
}

/// A national identity number masked to its last two digits
/// (`*********35`): the birth date in its first six is personal data.
pub fn mask(value: &str) -> String {
    let count = value.chars().count();
    let kept: String = value.chars().skip(count.saturating_sub(2)).collect();
    format!("{}{kept}", "*".repeat(count.saturating_sub(2).min(32)))
}

/// `p:` + the first 16 base64url characters of HMAC-SHA256(key, value):
/// the same person gives the same pseudonym under one key, and the number
/// cannot be recovered without the key.
pub fn pseudonym(key: &[u8], value: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, value.as_bytes());
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
    format!("p:{}", &encoded[..16])
}

/// Lines the writer had to drop (queue full) and write errors, since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
/// The queue of the writer thread, once started.
static WRITER: OnceLock<Writer> = OnceLock::new();

enum Message {
    Line(Vec<u8>),
    /// Flush what is queued, then acknowledge.
    Flush(SyncSender<()>),
}

struct Writer {
    queue: SyncSender<Message>,
    /// Serialises `flush` callers.
    flushing: Mutex<()>,
}

/// Lines dropped because the queue was full, since start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Audit write errors (lines that could not be written), since start.
pub fn write_errors() -> u64 {
    WRITE_ERRORS.load(Ordering::Relaxed)
}

/// Starts the writer thread writing to stdout (once per process; later
/// calls keep the first queue).
pub fn start(queue_lines: usize) {
    start_with(queue_lines, Box::new(std::io::stdout()));
}

fn start_with(queue_lines: usize, out: Box<dyn Write + Send>) {
    if WRITER.get().is_some() {
        return;
    }
    let (queue, receiver) = mpsc::sync_channel(queue_lines.max(1));
    let spawned = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || write_loop(&receiver, out, BATCH_INTERVAL));
    if spawned.is_ok() {
        let _ = WRITER.set(Writer {
            queue,
            flushing: Mutex::new(()),
        });
    }
}

/// How long the writer waits after a write before it looks at the queue
/// again. A writer blocked on an empty queue is woken by every line (a
/// futex wake and two context switches per request, on the worker's own
/// core when the process is pinned: measured 13-25 us of wall clock per
/// request on the load comparison's VM, `GATEWAY_AUDIT=false`). Waiting
/// lets lines gather, so a busy gateway wakes the writer about once per
/// interval and a line waits at most this long; 1,024 queued lines
/// (the default `queue_lines`) cover 1 ms at up to a million requests a
/// second.
const BATCH_INTERVAL: Duration = Duration::from_millis(1);

/// Writes batches: every line already queued goes out in one `write`,
/// then the writer waits `interval` before it looks again.
fn write_loop(receiver: &Receiver<Message>, mut out: Box<dyn Write + Send>, interval: Duration) {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Ok(first) = receiver.recv() {
        let mut lines = 0u64;
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    batch.extend_from_slice(&line);
                    lines += 1;
                }
                Message::Flush(ack) => acks.push(ack),
            }
            if batch.len() < 256 * 1024 {
                next = receiver.try_recv().ok();
            }
        }
        if lines > 0 && out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            WRITE_ERRORS.fetch_add(lines, Ordering::Relaxed);
        }
        batch.clear();
        if batch.capacity() > 1024 * 1024 {
            batch = Vec::with_capacity(64 * 1024);
        }
        for ack in acks {
            let _ = ack.send(());
        }
        if lines > 0 {
            std::thread::sleep(interval);
        }
    }
}

/// Waits (up to `timeout`) until every line queued so far is written: at
/// shutdown, so nothing accepted is lost. `false` when it timed out.
pub fn flush(timeout: Duration) -> bool {
    let Some(writer) = WRITER.get() else {
        let _ = std::io::stdout().flush();
        return true;
    };
    let _guard = writer.flushing.lock();
    let deadline = Instant::now() + timeout;
    let (ack, done) = mpsc::sync_channel(1);
    let mut message = Message::Flush(ack);
    loop {
        match writer.queue.try_send(message) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                message = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
    done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
}

/// Queues one audit line for the writer; never waits. A full queue drops
/// the line and counts it. Without a started writer (tools, unit tests) the
/// line is written to stdout at once.
pub fn emit(line: &AuditLine<'_>, audit: &Audit) {
    let mut buffer = Vec::with_capacity(512);
    render_into(line, audit, &mut buffer);
    buffer.push(b'\n');
    match WRITER.get() {
        Some(writer) => {
            if writer.queue.try_send(Message::Line(buffer)).is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        None => {
            if std::io::stdout().lock().write_all(&buffer).is_err() {
                WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ConsentFacts, TokenFacts};
    use std::time::UNIX_EPOCH;

    fn authorized(subject: &str, kind: SubjectType) -> Authorized {
        Authorized {
            token: Some(TokenFacts {
                issuer: "i".into(),
                consumer: "0192:310497460".into(),
                supplier: Some("0192:303137211".into()),
                client_id: Some("client-1".into()),
                scope: None,
                jti: Some("jti-1".into()),
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
            ..Default::default()
        }
    }

    fn cfg(personal_data: PersonalData) -> Audit {
        Audit {
            enabled: true,
            personal_data,
            pseudonym_key: Some(std::sync::Arc::from(&b"0123456789abcdef"[..])),
            queue_lines: 8,
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
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        }
    }

    #[test]
    fn masks_persons_by_default_and_keeps_organisations() {
        let a = authorized("17839116535", SubjectType::Person);
        let d = DeniedFacts::default();
        let v: serde_json::Value =
            serde_json::from_str(&render(&line(Some(&a), &d), &cfg(PersonalData::Masked))).unwrap();
        assert_eq!(v["subject"], "*********35");
        assert_eq!(v["supplier"], "0192:303137211");
        assert_eq!(v["client_id"], "client-1");
        assert_eq!(v["token_id"], "jti-1");
        assert_eq!(v["resource"], "r");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["consumer"], "0192:310497460");
        assert_eq!(v["consent_id"], "c-1");
        assert_eq!(v["path"], "/income/{fnr}");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["duration_ms"], 1.235);
        let org = authorized("302685991", SubjectType::Organization);
        let v: serde_json::Value =
            serde_json::from_str(&render(&line(Some(&org), &d), &cfg(PersonalData::Masked)))
                .unwrap();
        assert_eq!(v["subject"], "302685991");
    }

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = authorized("17839116535", SubjectType::Person);
        let d = DeniedFacts::default();
        let v: serde_json::Value = serde_json::from_str(&render(
            &line(Some(&a), &d),
            &cfg(PersonalData::Pseudonymized),
        ))
        .unwrap();
        let p = v["subject"].as_str().unwrap();
        assert!(p.starts_with("p:") && p.len() == 18, "{p}");
        assert!(p[2..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(p, pseudonym(b"0123456789abcdef", "17839116535"));
        assert_ne!(p, pseudonym(b"another key 12345", "17839116535"));
        assert_ne!(p, pseudonym(b"0123456789abcdef", "05917596738"));
        assert_eq!(mask("17839116535"), "*********35");
    }

    #[test]
    fn the_writer_counts_write_errors() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("broken"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (queue, receiver) = mpsc::sync_channel(4);
        let before = write_errors();
        let thread = std::thread::spawn(move || {
            write_loop(&receiver, Box::new(Broken), Duration::from_millis(1))
        });
        queue.send(Message::Line(b"x\n".to_vec())).unwrap();
        let (ack, done) = mpsc::sync_channel(1);
        queue.send(Message::Flush(ack)).unwrap();
        done.recv().unwrap();
        assert!(write_errors() > before);
        drop(queue);
        thread.join().unwrap();
    }

    #[test]
    fn lines_that_arrive_while_the_writer_waits_go_out_in_one_write() {
        /// Records each `write` call's bytes.
        struct Recorder(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Recorder {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.send(bytes.to_vec());
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (writes, written) = mpsc::channel();
        let (queue, receiver) = mpsc::sync_channel(64);
        // A long interval, so that the 50 lines below surely arrive while
        // the writer waits after its first write.
        let thread = std::thread::spawn(move || {
            write_loop(
                &receiver,
                Box::new(Recorder(writes)),
                Duration::from_millis(300),
            )
        });
        queue.send(Message::Line(b"first\n".to_vec())).unwrap();
        assert_eq!(written.recv().unwrap(), b"first\n");
        for n in 0..50 {
            queue
                .send(Message::Line(format!("{n}\n").into_bytes()))
                .unwrap();
        }
        let batch = written.recv().unwrap();
        assert_eq!(
            batch.iter().filter(|b| **b == b'\n').count(),
            50,
            "one write"
        );
        assert!(batch.starts_with(b"0\n1\n") && batch.ends_with(b"49\n"));
        drop(queue);
        thread.join().unwrap();
    }

    #[test]
    fn clear_and_omit() {
        let a = authorized("17839116535", SubjectType::Person);
        let d = DeniedFacts::default();
        let clear = render(&line(Some(&a), &d), &cfg(PersonalData::Clear));
        assert!(clear.contains("17839116535"));
        let omit = render(&line(Some(&a), &d), &cfg(PersonalData::Omit));
        assert!(!omit.contains("\"subject\""));
        assert!(!omit.contains("1783911"));
        // `omit` leaves the field out whatever the subject's kind.
        let org = authorized("302685991", SubjectType::Organization);
        let omit = render(&line(Some(&org), &d), &cfg(PersonalData::Omit));
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
                write_rfc3339(t, &mut buffer),
                Some(rfc3339(t).as_str()),
                "{millis}"
            );
        }
        let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(write_rfc3339(before_epoch, &mut [0u8; 24]), None);
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(write_rfc3339(far, &mut [0u8; 24]), None);
        let d = DeniedFacts::default();
        let mut l = line(None, &d);
        l.ts = far;
        let v: serde_json::Value =
            serde_json::from_str(&render(&l, &cfg(PersonalData::Masked))).unwrap();
        assert_eq!(v["ts"], rfc3339(far));
    }

    #[test]
    fn denied_before_verification_has_no_identity() {
        let d = DeniedFacts::default();
        let v: serde_json::Value =
            serde_json::from_str(&render(&line(None, &d), &cfg(PersonalData::Clear))).unwrap();
        assert!(v.get("subject").is_none());
        assert!(v.get("consumer").is_none());
    }
}
