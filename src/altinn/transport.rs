//! The one HTTP client of the Altinn sync: https (http only to loopback, as
//! validated), no redirects, a connect and a whole-request time-out, and a
//! body cap counted while streaming. Answers are handed on as bytes.

use crate::keys::fetch::error_chain;
use std::time::Duration;

use reqwest::{Client, Url};

use super::AltinnError;

/// Largest answer read from Maskinporten or Altinn (a page of members, a
/// resource, a token).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One answer: status, `ETag` when given, body (empty on 304).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

/// A bounded HTTP client for one configured `altinn` section.
#[derive(Debug, Clone)]
pub struct Transport {
    client: Client,
    max_body_bytes: usize,
}

impl Transport {
    /// `timeout` bounds each request, body included.
    pub fn new(timeout: Duration) -> Result<Self, AltinnError> {
        let client = Client::builder()
            .use_rustls_tls()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("consent-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AltinnError::Client(error_chain(&e)))?;
        Ok(Self {
            client,
            max_body_bytes: MAX_BODY_BYTES,
        })
    }

    /// GET `url` with a bearer token and, optionally, `If-None-Match`.
    pub async fn get(
        &self,
        url: &Url,
        bearer: &str,
        if_none_match: Option<&str>,
    ) -> Result<Answer, AltinnError> {
        let mut request = self
            .client
            .get(url.clone())
            .bearer_auth(bearer)
            .header(http::header::ACCEPT, "application/json");
        if let Some(etag) = if_none_match {
            request = request.header(http::header::IF_NONE_MATCH, etag);
        }
        self.read(request).await
    }

    /// GET `url` without credentials (public Resource Registry documents).
    pub async fn get_public(&self, url: &Url) -> Result<Answer, AltinnError> {
        let request = self
            .client
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json");
        self.read(request).await
    }

    /// POST an `application/x-www-form-urlencoded` body.
    pub async fn post_form(&self, url: &Url, form: &[(&str, &str)]) -> Result<Answer, AltinnError> {
        let request = self
            .client
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .form(form);
        self.read(request).await
    }

    async fn read(&self, request: reqwest::RequestBuilder) -> Result<Answer, AltinnError> {
        let mut response = request.send().await.map_err(request_error)?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .map(str::to_string);
        let cap = self.max_body_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return Err(AltinnError::TooLarge(cap));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > cap {
                return Err(AltinnError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, etag, body })
    }
}

/// Parses a base URL from the (validated) configuration.
pub fn parse_url(text: &str) -> Result<Url, AltinnError> {
    Url::parse(text).map_err(|e| AltinnError::Client(format!("`{text}`: {e}")))
}

fn request_error(error: reqwest::Error) -> AltinnError {
    if error.is_timeout() {
        AltinnError::Timeout
    } else {
        AltinnError::Request(error_chain(&error))
    }
}
