//! The gateway's own Maskinporten client: the JWT-bearer grant (RFC 7523)
//! with a client assertion signed by the configured key, the token cached
//! until shortly before it expires and refreshed single-flight; then the
//! exchange for an Altinn token (`authentication/api/v1/exchange/maskinporten`).
//! Both steps keep a status for `/status`; no token or key ever leaves here
//! except in the `Authorization` header of the next request.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::transport::{parse_url, Transport};
use super::AltinnError;
use crate::config::Altinn;

/// The client assertion's lifetime (Maskinporten accepts at most 120 s).
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);
/// A token is refreshed this long before it expires (or at half its
/// lifetime when that is shorter).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Longest token accepted from Maskinporten or the exchange.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The claims of a client assertion (Digdir's "JWT grant").
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssertionClaims {
    pub aud: String,
    pub iss: String,
    pub scope: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// The outcome of one step, for `/status` (never the token itself).
#[derive(Debug, Clone, Default)]
pub struct StepStatus {
    pub last_attempt: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub expires_at: Option<SystemTime>,
}

impl StepStatus {
    pub fn to_json(&self) -> serde_json::Value {
        let time = |t: Option<SystemTime>| t.map(crate::time::rfc3339);
        serde_json::json!({
            "last_attempt": time(self.last_attempt),
            "last_success": time(self.last_success),
            "last_outcome": match (self.last_attempt, &self.last_error) {
                (None, _) => serde_json::Value::Null,
                (Some(_), None) => "success".into(),
                (Some(_), Some(_)) => "failure".into(),
            },
            "last_error": self.last_error,
            "expires_at": time(self.expires_at),
        })
    }
}

#[derive(Clone)]
struct Cached {
    token: String,
    refresh_at: SystemTime,
    expires_at: SystemTime,
}

/// One configured Maskinporten client and its token caches.
pub struct MaskinportenClient {
    transport: Transport,
    token_url: Url,
    exchange_url: Url,
    audience: String,
    client_id: String,
    kid: String,
    scope: String,
    key: EncodingKey,
    maskinporten: tokio::sync::Mutex<Option<Cached>>,
    altinn: tokio::sync::Mutex<Option<Cached>>,
    maskinporten_status: Mutex<StepStatus>,
    exchange_status: Mutex<StepStatus>,
    /// Counts each token fetch and exchange (`kind="token"`).
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for MaskinportenClient {
    /// Leaves out the key and the tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskinportenClient")
            .field("client_id", &self.client_id)
            .field("kid", &self.kid)
            .field("token_url", &self.token_url.as_str())
            .finish()
    }
}

/// Which token a caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Maskinporten,
    Exchange,
}

impl Step {
    /// The step's name in logs and `/status`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Maskinporten => "maskinporten_token",
            Step::Exchange => "altinn_token_exchange",
        }
    }
}

impl MaskinportenClient {
    /// Builds the client for `altinn`, reading its key file.
    pub fn new(altinn: &Altinn) -> Result<Self, AltinnError> {
        let pem = std::fs::read(&altinn.key_file).map_err(|e| {
            AltinnError::Key(format!("cannot read `{}`: {e}", altinn.key_file.display()))
        })?;
        warn_if_readable_by_others(&altinn.key_file);
        let key = EncodingKey::from_rsa_pem(&pem).map_err(|_| {
            AltinnError::Key(format!(
                "`{}` is not an RSA private key in PEM",
                altinn.key_file.display()
            ))
        })?;
        Ok(Self {
            transport: Transport::new(altinn.timeout)?,
            token_url: parse_url(&format!("{}/token", altinn.maskinporten_url))?,
            exchange_url: parse_url(&format!(
                "{}/authentication/api/v1/exchange/maskinporten",
                altinn.platform_url
            ))?,
            audience: format!("{}/", altinn.maskinporten_url),
            client_id: altinn.client_id.clone(),
            kid: altinn.kid.clone(),
            scope: altinn.scopes.join(" "),
            key,
            maskinporten: tokio::sync::Mutex::new(None),
            altinn: tokio::sync::Mutex::new(None),
            maskinporten_status: Mutex::new(StepStatus::default()),
            exchange_status: Mutex::new(StepStatus::default()),
            metrics: None,
        })
    }

    /// Counts token fetches and exchanges in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn record<T: HasExpiry>(&self, step: Step, now: SystemTime, result: &Result<T, AltinnError>) {
        let status = match step {
            Step::Maskinporten => &self.maskinporten_status,
            Step::Exchange => &self.exchange_status,
        };
        record(status, now, result);
        if let Err(e) = result {
            log::warn!("Altinn {}: {e}", step.name());
        }
        if let Some(metrics) = &self.metrics {
            let outcome = if result.is_ok() { "success" } else { "failure" };
            super::count(metrics, "token", outcome);
        }
    }

    /// The transport, shared with the Resource Registry client.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// A fresh client assertion for `now` (RS256, header `kid`, unique `jti`).
    pub fn client_assertion(&self, now: SystemTime) -> Result<String, AltinnError> {
        let iat = unix(now);
        let claims = AssertionClaims {
            aud: self.audience.clone(),
            iss: self.client_id.clone(),
            scope: self.scope.clone(),
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| AltinnError::Key(format!("cannot sign the client assertion: {e}")))
    }

    /// A Maskinporten access token, from the cache while it is fresh.
    /// Concurrent callers wait for the one request in flight.
    pub async fn maskinporten_token(&self) -> Result<String, AltinnError> {
        let mut cached = self.maskinporten.lock().await;
        let now = SystemTime::now();
        if let Some(c) = cached.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let result = self.fetch_maskinporten(now).await;
        self.record(Step::Maskinporten, now, &result);
        let fresh = result?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn fetch_maskinporten(&self, now: SystemTime) -> Result<Cached, AltinnError> {
        let assertion = self.client_assertion(now)?;
        let answer = self
            .transport
            .post_form(
                &self.token_url,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &assertion),
                ],
            )
            .await?;
        if answer.status != 200 {
            return Err(match oauth_error(&answer.body) {
                Some(error) => AltinnError::Refused(answer.status, error),
                None => AltinnError::Status(answer.status),
            });
        }
        let (token, expires_in) = parse_token_response(&answer.body)?;
        Ok(cached(token, now, expires_in))
    }

    /// An Altinn token exchanged for the Maskinporten token, from the cache
    /// while it is fresh; single-flight like the Maskinporten token.
    pub async fn altinn_token(&self) -> Result<String, AltinnError> {
        let mut cached = self.altinn.lock().await;
        let now = SystemTime::now();
        if let Some(c) = cached.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let maskinporten = self.maskinporten_token().await?;
        let result = self.exchange(&maskinporten, now).await;
        self.record(Step::Exchange, now, &result);
        let fresh = result?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn exchange(&self, maskinporten: &str, now: SystemTime) -> Result<Cached, AltinnError> {
        let answer = self
            .transport
            .get(&self.exchange_url, maskinporten, None)
            .await?;
        if answer.status != 200 {
            if answer.status == 401 {
                // The Maskinporten token may have been revoked: fetch anew next time.
                *self.maskinporten.lock().await = None;
            }
            return Err(AltinnError::Status(answer.status));
        }
        let token = parse_exchange_response(&answer.body)?;
        let lifetime = jwt_exp(&token)
            .map(|exp| exp.saturating_sub(unix(now)))
            .ok_or_else(|| AltinnError::Malformed("the Altinn token has no `exp`".into()))?;
        Ok(cached(token, now, lifetime))
    }

    /// Forgets the Altinn token (Altinn answered 401 with it).
    pub async fn invalidate(&self) {
        *self.altinn.lock().await = None;
    }

    /// The status of one step.
    pub fn status(&self, step: Step) -> StepStatus {
        let lock = match step {
            Step::Maskinporten => &self.maskinporten_status,
            Step::Exchange => &self.exchange_status,
        };
        lock.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn record<T>(status: &Mutex<StepStatus>, now: SystemTime, result: &Result<T, AltinnError>)
where
    T: HasExpiry,
{
    if let Ok(mut s) = status.lock() {
        s.last_attempt = Some(now);
        match result {
            Ok(value) => {
                s.last_success = Some(now);
                s.last_error = None;
                s.expires_at = Some(value.expires_at());
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    }
}

trait HasExpiry {
    fn expires_at(&self) -> SystemTime;
}

impl HasExpiry for Cached {
    fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

fn cached(token: String, now: SystemTime, lifetime_secs: u64) -> Cached {
    let lifetime = Duration::from_secs(lifetime_secs);
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    Cached {
        token,
        refresh_at: now + lifetime - margin,
        expires_at: now + lifetime,
    }
}

/// A private key readable by group or others is logged (not refused: the
/// mount may be read-only, and the operator decides).
fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                log::warn!(
                    "altinn.maskinporten.key_file `{}` is readable by group or others (mode {:o}); \
                     make it readable by the gateway's user only",
                    path.display(),
                    meta.permissions().mode() & 0o777
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A token as it may go into an `Authorization` header: visible ASCII, bounded.
fn check_token(token: &str) -> Result<(), AltinnError> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(AltinnError::Malformed(format!(
            "a token of {} bytes (1 to {MAX_TOKEN_BYTES} expected)",
            token.len()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AltinnError::Malformed(
            "the token has characters a header cannot carry".into(),
        ));
    }
    Ok(())
}

/// Maskinporten's token response: `access_token` and `expires_in` (seconds).
pub fn parse_token_response(body: &[u8]) -> Result<(String, u64), AltinnError> {
    #[derive(Deserialize)]
    struct TokenResponse {
        access_token: String,
        expires_in: u64,
    }
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| AltinnError::Malformed(format!("token response: {e}")))?;
    check_token(&parsed.access_token)?;
    if parsed.expires_in == 0 {
        return Err(AltinnError::Malformed("`expires_in` is 0".into()));
    }
    Ok((parsed.access_token, parsed.expires_in.min(24 * 3600)))
}

/// The OAuth `error` code of a refused grant (`invalid_client`,
/// `invalid_scope`, ...), when it is a short plain word: the description is
/// left out (it may echo what was sent).
pub fn oauth_error(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
    }
    let parsed: OAuthError = serde_json::from_slice(body).ok()?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    (parsed.error.len() <= 64 && parsed.error.bytes().all(plain)).then_some(parsed.error)
}

/// The exchange answers the Altinn token as text (or as a JSON string).
pub fn parse_exchange_response(body: &[u8]) -> Result<String, AltinnError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| AltinnError::Malformed("the exchanged token is not text".into()))?
        .trim();
    let token = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    check_token(token)?;
    Ok(token.to_string())
}

/// The `exp` of a JWT, read without verifying it (the gateway only uses it
/// to know when to exchange again; Altinn verifies it).
pub fn jwt_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_responses_are_checked() {
        let (token, expires) = parse_token_response(
            br#"{"access_token":"abc.def.ghi","token_type":"Bearer","expires_in":120,"scope":"x"}"#,
        )
        .unwrap();
        assert_eq!((token.as_str(), expires), ("abc.def.ghi", 120));
        for bad in [
            &b"not json"[..],
            br#"{"access_token":"a"}"#,
            br#"{"access_token":"","expires_in":5}"#,
            br#"{"access_token":"a b","expires_in":5}"#,
            br#"{"access_token":"a","expires_in":0}"#,
            br#"{"access_token":"a","expires_in":-1}"#,
        ] {
            assert!(
                parse_token_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn oauth_errors_are_plain_words_only() {
        assert_eq!(
            oauth_error(br#"{"error":"invalid_scope","error_description":"x"}"#).as_deref(),
            Some("invalid_scope")
        );
        assert_eq!(
            oauth_error(
                br#"{"error":"a b
c"}"#
            ),
            None
        );
        assert_eq!(oauth_error(b"<html>"), None);
    }

    #[test]
    fn exchange_answers_as_text_or_json_string() {
        assert_eq!(parse_exchange_response(b"a.b.c\n").unwrap(), "a.b.c");
        assert_eq!(parse_exchange_response(b"\"a.b.c\"").unwrap(), "a.b.c");
        assert!(parse_exchange_response(b"").is_err());
        assert!(parse_exchange_response(b"a\r\nX-Injected: 1").is_err());
        assert!(parse_exchange_response(&vec![b'a'; MAX_TOKEN_BYTES + 1]).is_err());
    }

    #[test]
    fn jwt_exp_is_read_without_verification() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"exp":1700000000}"#);
        assert_eq!(jwt_exp(&format!("e30.{payload}.sig")), Some(1_700_000_000));
        assert_eq!(jwt_exp("garbage"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
    }

    #[test]
    fn tokens_refresh_before_they_expire() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let c = cached("t".into(), now, 120);
        assert_eq!(c.refresh_at, now + Duration::from_secs(90));
        assert_eq!(c.expires_at, now + Duration::from_secs(120));
        let short = cached("t".into(), now, 10);
        assert_eq!(short.refresh_at, now + Duration::from_secs(5));
    }

    #[test]
    fn the_assertion_names_client_audience_and_a_unique_jti() {
        let issuer = crate::dev_issuer::DevIssuer::generate("kid-1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key.pem");
        std::fs::write(&key_file, issuer.private_pem()).unwrap();
        let altinn = Altinn {
            environment: crate::config::AltinnEnvironment::Tt02,
            platform_url: "https://platform.tt02.altinn.no".into(),
            maskinporten_url: "https://test.maskinporten.no".into(),
            client_id: "client-1".into(),
            kid: "kid-1".into(),
            key_file,
            scopes: vec!["a:b".into(), "c:d".into()],
            refresh: Duration::from_secs(60),
            max_stale: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            cache_dir: None,
        };
        let client = MaskinportenClient::new(&altinn).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = client.client_assertion(now).unwrap();
        let b = client.client_assertion(now).unwrap();
        let header = jsonwebtoken::decode_header(&a).unwrap();
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        assert_eq!(header.alg, Algorithm::RS256);
        let claims = |t: &str| -> AssertionClaims {
            let payload = t.split('.').nth(1).unwrap();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
        };
        let ca = claims(&a);
        assert_eq!(ca.aud, "https://test.maskinporten.no/");
        assert_eq!(ca.iss, "client-1");
        assert_eq!(ca.scope, "a:b c:d");
        assert_eq!(ca.exp - ca.iat, ASSERTION_LIFETIME.as_secs());
        assert_ne!(ca.jti, claims(&b).jti);
        assert!(!format!("{client:?}").contains("PRIVATE"));
    }
}
