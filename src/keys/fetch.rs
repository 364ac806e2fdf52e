//! The only JWKS network code: one HTTP GET of an issuer's `jwks_uri`, with
//! the transport rules of SPEC section 6 (https, or plain http to a loopback
//! host only; optional private trust anchors; timeouts; no redirects; status
//! 200; a body cap counted while streaming).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Client, Url};
use thiserror::Error;

use crate::config::Issuer;

/// Default time allowed to establish the connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time allowed for the whole fetch, body included.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest JWKS document accepted.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why one JWKS fetch failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("jwks_uri {uri:?} is not usable: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("ca_file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    #[error("JWKS request failed: {0}")]
    Request(String),
    #[error("JWKS request timed out")]
    Timeout,
    #[error("JWKS endpoint answered HTTP {0}, expected 200")]
    Status(u16),
    #[error("JWKS body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("jwks_file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Fetches the raw bytes of one issuer's JWKS document.
#[async_trait]
pub trait JwksFetcher: Send + Sync {
    async fn fetch(&self) -> Result<Vec<u8>, FetchError>;
}

/// Transport limits of an [`HttpJwksFetcher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// A JWKS fetcher over HTTP(S), built once per issuer (its client keeps a
/// connection pool, so it is used from one tokio runtime only).
#[derive(Debug, Clone)]
pub struct HttpJwksFetcher {
    client: Client,
    url: Url,
    max_body_bytes: usize,
}

impl HttpJwksFetcher {
    /// A fetcher for `issuer.jwks_uri` with the default limits.
    pub fn from_issuer(issuer: &Issuer) -> Result<Self, FetchError> {
        Self::new(
            &issuer.jwks_uri,
            issuer.ca_file.as_deref(),
            FetchLimits::default(),
        )
    }

    /// A fetcher for `uri`. With `ca_file`, the PEM certificates in it are the
    /// only trust anchors; without, the system roots (and the bundled Mozilla
    /// roots) are.
    pub fn new(uri: &str, ca_file: Option<&Path>, limits: FetchLimits) -> Result<Self, FetchError> {
        let url = check_uri(uri)?;
        let mut builder = Client::builder()
            .use_rustls_tls()
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("consent-gateway/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "http" {
            // Loopback only: a proxy from the environment must not see it.
            builder = builder.no_proxy();
        }
        if let Some(path) = ca_file {
            builder = builder.tls_built_in_root_certs(false);
            for cert in read_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| FetchError::Client(error_chain(&e)))?;
        Ok(Self {
            client,
            url,
            max_body_bytes: limits.max_body_bytes,
        })
    }

    /// The URL fetched.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

#[async_trait]
impl JwksFetcher for HttpJwksFetcher {
    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(
                http::header::ACCEPT,
                "application/json, application/jwk-set+json",
            )
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        let cap = self.max_body_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return Err(FetchError::TooLarge(cap));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > cap {
                return Err(FetchError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A fetcher that always fails with the same error: what an issuer gets when
/// its HTTP fetcher cannot be built (e.g. an unreadable `ca_file`), so the
/// failure is retried, counted and shown in `/status` like any other.
#[derive(Debug, Clone)]
pub struct FailingFetcher(pub FetchError);

#[async_trait]
impl JwksFetcher for FailingFetcher {
    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        Err(self.0.clone())
    }
}

/// An issuer's `jwks_file`, read whole (at most the fetch size limit) each
/// time the keys are refreshed.
#[derive(Debug, Clone)]
pub struct FileJwksFetcher {
    path: PathBuf,
    max_bytes: usize,
}

impl FileJwksFetcher {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            max_bytes: FetchLimits::default().max_body_bytes,
        }
    }
}

#[async_trait]
impl JwksFetcher for FileJwksFetcher {
    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        let error = |reason: String| FetchError::File {
            path: self.path.clone(),
            reason,
        };
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| error(e.to_string()))?;
        if bytes.len() > self.max_bytes {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        Ok(bytes)
    }
}

/// The production fetcher for `issuer`: a [`FileJwksFetcher`] for a
/// `jwks_file`, else an [`HttpJwksFetcher`], or a [`FailingFetcher`]
/// carrying the reason it could not be built.
pub fn http_fetcher_for(issuer: &Issuer) -> Arc<dyn JwksFetcher> {
    if let Some(path) = &issuer.jwks_file {
        return Arc::new(FileJwksFetcher::new(path));
    }
    match HttpJwksFetcher::from_issuer(issuer) {
        Ok(fetcher) => Arc::new(fetcher),
        Err(error) => {
            log::error!("issuer {}: cannot fetch its JWKS: {error}", issuer.name);
            Arc::new(FailingFetcher(error))
        }
    }
}

/// Accepts `https://...`, and `http://...` only to a loopback host.
pub fn check_uri(uri: &str) -> Result<Url, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidUri {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(uri).map_err(|e| invalid(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URI are not allowed"));
    }
    match url.scheme() {
        "https" => {
            if url.host().is_none() {
                return Err(invalid("no host"));
            }
            Ok(url)
        }
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(invalid("plain http is only allowed to a loopback host")),
        _ => Err(invalid("the scheme must be https")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, FetchError> {
    let ca_error = |reason: String| FetchError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| ca_error(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(ca_error("no PEM certificate in the file".to_string()));
    }
    Ok(certs)
}

fn request_error(error: reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else {
        FetchError::Request(error_chain(&error))
    }
}

/// The error and its causes on one line (reqwest hides the useful part,
/// e.g. "connection refused" or a certificate problem, in its sources).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_issuer::DevIssuer;
    use crate::support::JwksServer;

    fn fetcher(url: &str) -> HttpJwksFetcher {
        HttpJwksFetcher::new(url, None, FetchLimits::default()).unwrap()
    }

    #[tokio::test]
    async fn fetches_the_published_jwks() {
        let issuer = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(issuer.jwks_json());
        let body = fetcher(&server.url()).fetch().await.unwrap();
        assert_eq!(body, issuer.jwks_json().as_bytes());
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn a_status_other_than_200_is_a_failure() {
        let server = JwksServer::start("{}".into());
        server.set_failing(true);
        assert_eq!(
            fetcher(&server.url()).fetch().await,
            Err(FetchError::Status(500))
        );
        let missing = format!("http://{}/nope", server.addr());
        assert_eq!(
            fetcher(&missing).fetch().await,
            Err(FetchError::Status(404))
        );
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let server = JwksServer::start("{}".into());
        server.set_status(302);
        assert_eq!(
            fetcher(&server.url()).fetch().await,
            Err(FetchError::Status(302))
        );
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused_with_or_without_content_length() {
        let limits = FetchLimits {
            max_body_bytes: 1000,
            ..FetchLimits::default()
        };
        let server = JwksServer::start("x".repeat(1001));
        let capped = HttpJwksFetcher::new(&server.url(), None, limits).unwrap();
        assert_eq!(capped.fetch().await, Err(FetchError::TooLarge(1000)));
        // Without Content-Length the cap is counted while streaming.
        server.set_omit_content_length(true);
        assert_eq!(capped.fetch().await, Err(FetchError::TooLarge(1000)));
        server.set_body("x".repeat(1000));
        assert_eq!(capped.fetch().await.unwrap().len(), 1000);
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_request_failure() {
        let server = JwksServer::start("{}".into());
        let url = server.url();
        drop(server);
        assert!(matches!(
            fetcher(&url).fetch().await,
            Err(FetchError::Request(_))
        ));
    }

    #[tokio::test]
    async fn the_total_timeout_bounds_a_slow_endpoint() {
        let server = JwksServer::start("{}".into());
        server.set_delay(Duration::from_secs(30));
        let limits = FetchLimits {
            total_timeout: Duration::from_millis(200),
            ..FetchLimits::default()
        };
        let slow = HttpJwksFetcher::new(&server.url(), None, limits).unwrap();
        assert_eq!(slow.fetch().await, Err(FetchError::Timeout));
    }

    #[test]
    fn https_anywhere_and_plain_http_only_to_loopback() {
        for ok in [
            "https://test.maskinporten.no/jwk",
            "http://127.0.0.1:8080/jwks",
            "http://127.9.9.9/jwks",
            "http://localhost:1/jwks",
            "http://[::1]:8080/jwks",
        ] {
            assert!(check_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://test.maskinporten.no/jwk",
            "http://10.0.0.1/jwks",
            "http://localhost.evil.example/jwks",
            "ftp://127.0.0.1/jwks",
            "file:///etc/passwd",
            "https://user:pw@example.no/jwks",
            "not a url",
        ] {
            assert!(
                matches!(check_uri(bad), Err(FetchError::InvalidUri { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let missing = Path::new("/nonexistent/ca.pem");
        assert!(matches!(
            HttpJwksFetcher::new(
                "https://example.no/jwks",
                Some(missing),
                FetchLimits::default()
            ),
            Err(FetchError::CaFile { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        assert!(matches!(
            HttpJwksFetcher::new(
                "https://example.no/jwks",
                Some(&empty),
                FetchLimits::default()
            ),
            Err(FetchError::CaFile { .. })
        ));
    }

    #[tokio::test]
    async fn a_fetcher_that_cannot_be_built_fails_every_fetch() {
        let issuer = Issuer::with_defaults("bad", "https://bad/", "http://example.no/jwks");
        let fetcher = http_fetcher_for(&issuer);
        assert!(matches!(
            fetcher.fetch().await,
            Err(FetchError::InvalidUri { .. })
        ));
    }
}
