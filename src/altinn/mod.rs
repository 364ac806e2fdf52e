//! Altinn as the source of truth (SPEC section 13): the gateway's own
//! Maskinporten client and the Altinn token exchange (`maskinporten`), the
//! Resource Registry clients (`registry` for access lists, `resources` for
//! consent resources), the background sync of access lists
//! with its last good copies on disk (`sync`), and the bounded HTTP transport
//! they share (`transport`). Every Altinn answer is untrusted input.

pub mod maskinporten;
pub mod registry;
pub mod resources;
pub mod sync;
pub mod transport;

use thiserror::Error;

/// Counts one sync step (`kind`: token, access_list, resource) and, on
/// success, when it last succeeded.
pub(crate) fn count(metrics: &crate::metrics::Metrics, kind: &str, outcome: &str) {
    metrics
        .altinn_sync_total
        .with_label_values(&[kind, outcome])
        .inc();
    if outcome != "failure" {
        metrics
            .altinn_last_success_timestamp_seconds
            .with_label_values(&[kind])
            .set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            );
    }
}

/// Why one step of talking to Maskinporten or Altinn failed. The text never
/// holds a token, a key or a response body: it goes to logs and `/status`.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AltinnError {
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
    #[error("the client key: {0}")]
    Key(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("timed out")]
    Timeout,
    #[error("HTTP {0}{hint}", hint = status_hint(*.0))]
    Status(u16),
    #[error("HTTP {0}, Maskinporten says `{1}` (check client_id, kid, the registered key and the scopes)")]
    Refused(u16, String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("the pages loop: `links.next` points at a page already read")]
    PageLoop,
    #[error("more than {0} pages")]
    TooManyPages(usize),
    #[error("more than {0} members")]
    TooManyMembers(usize),
    #[error("`links.next` leaves the Altinn platform URL")]
    ForeignLink,
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (is the Maskinporten client granted the scope, and is it the list's owner?)",
        404 => " (not found)",
        429 => " (rate limited)",
        500..=599 => " (Altinn error)",
        _ => "",
    }
}
