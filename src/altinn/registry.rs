//! The Resource Registry client: the members of one access list, every page
//! (`links.next`), with a conditional first request (`If-None-Match`), a page
//! loop guard and bounds on pages and members. Members are mapped from
//! `urn:altinn:organization:identifier-no:<orgnr>` to `0192:<orgnr>`; any
//! other member is ignored and counted.

use std::collections::{BTreeSet, HashSet};

use reqwest::Url;
use serde::Deserialize;

use super::transport::{parse_url, Transport};
use super::AltinnError;
use crate::config::{is_valid_orgnr, AccessListRef};

/// Most pages read for one list.
pub const MAX_PAGES: usize = 1_000;
/// Most members accepted for one list (organisations or not).
pub const MAX_MEMBERS: usize = 200_000;
/// The URN of an organisation member.
pub const ORG_URN: &str = "urn:altinn:organization:identifier-no";

/// One list, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// Normalised `0192:<orgnr>`.
    pub members: BTreeSet<String>,
    /// Members that are not (valid) organisations.
    pub ignored: usize,
    /// The first page's `ETag`, for the next conditional request.
    pub etag: Option<String>,
}

/// What a sync of one list found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304 to `If-None-Match`: the copy held is current.
    NotModified,
    Members(Members),
}

#[derive(Deserialize)]
struct Page {
    data: Vec<serde_json::Value>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<String>,
}

/// The first page's URL of `list` under `platform_url`.
pub fn members_url(platform_url: &str, list: &AccessListRef) -> Result<Url, AltinnError> {
    parse_url(&format!(
        "{platform_url}/resourceregistry/api/v1/access-lists/{}/{}/members",
        list.owner, list.identifier
    ))
}

/// Reads every page of `list` with the Altinn token `bearer`. `etag` is
/// the copy held (sent on the first page only).
pub async fn fetch_members(
    transport: &Transport,
    platform_url: &str,
    list: &AccessListRef,
    bearer: &str,
    etag: Option<&str>,
) -> Result<Fetched, AltinnError> {
    let base = parse_url(platform_url)?;
    let mut url = members_url(platform_url, list)?;
    let mut seen = HashSet::new();
    let mut out = Members {
        members: BTreeSet::new(),
        ignored: 0,
        etag: None,
    };
    for page_no in 0..MAX_PAGES {
        if !seen.insert(url.as_str().to_string()) {
            return Err(AltinnError::PageLoop);
        }
        let answer = transport
            .get(&url, bearer, etag.filter(|_| page_no == 0))
            .await?;
        match answer.status {
            304 if page_no == 0 && etag.is_some() => return Ok(Fetched::NotModified),
            200 => {}
            other => return Err(AltinnError::Status(other)),
        }
        if page_no == 0 {
            out.etag = answer.etag;
        }
        let page: Page = serde_json::from_slice(&answer.body)
            .map_err(|e| AltinnError::Malformed(format!("members page: {e}")))?;
        for member in &page.data {
            match organisation(member) {
                Some(orgnr) => {
                    out.members.insert(format!("0192:{orgnr}"));
                }
                None => out.ignored += 1,
            }
        }
        if out.members.len() + out.ignored > MAX_MEMBERS {
            return Err(AltinnError::TooManyMembers(MAX_MEMBERS));
        }
        match page.links.and_then(|l| l.next).filter(|n| !n.is_empty()) {
            None => return Ok(Fetched::Members(out)),
            Some(next) => url = next_url(&base, &next)?,
        }
    }
    Err(AltinnError::TooManyPages(MAX_PAGES))
}

/// `links.next`, absolute or relative, must stay on the platform's origin
/// (the token goes with it).
fn next_url(base: &Url, next: &str) -> Result<Url, AltinnError> {
    let url = base
        .join(next)
        .map_err(|_| AltinnError::Malformed("`links.next` is not a URL".into()))?;
    if url.origin() != base.origin() {
        return Err(AltinnError::ForeignLink);
    }
    Ok(url)
}

/// The organisation number of one member: a URN string
/// `urn:altinn:organization:identifier-no:<orgnr>`, or an object whose `id`
/// is that string or whose `identifiers` map that URN to the number.
pub fn organisation(member: &serde_json::Value) -> Option<String> {
    let from_urn = |text: &str| {
        text.strip_prefix(ORG_URN)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::to_string)
    };
    let orgnr = match member {
        serde_json::Value::String(text) => from_urn(text),
        serde_json::Value::Object(map) => map
            .get("identifiers")
            .and_then(|ids| ids.get(ORG_URN))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| map.get("id").and_then(|v| v.as_str()).and_then(from_urn)),
        _ => None,
    }?;
    is_valid_orgnr(&orgnr).then_some(orgnr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_are_organisations_or_ignored() {
        let cases = [
            (
                json!("urn:altinn:organization:identifier-no:991825827"),
                true,
            ),
            (
                json!({"id": "urn:altinn:organization:identifier-no:991825827"}),
                true,
            ),
            (
                json!({"id": "x", "identifiers": {"urn:altinn:organization:identifier-no": "991825827"}}),
                true,
            ),
            (
                json!("urn:altinn:organization:identifier-no:991825828"),
                false,
            ),
            (json!("urn:altinn:person:identifier-no:25922947409"), false),
            (
                json!("urn:altinn:organization:identifier-no991825827"),
                false,
            ),
            (json!(991825827), false),
            (json!({"identifiers": {}}), false),
        ];
        for (member, ok) in cases {
            assert_eq!(organisation(&member).is_some(), ok, "{member}");
        }
    }

    #[test]
    fn next_links_stay_on_the_platform() {
        let base = Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(next_url(&base, "/resourceregistry/x?token=2").is_ok());
        assert!(next_url(&base, "http://127.0.0.1:9/y").is_ok());
        assert_eq!(
            next_url(&base, "http://evil.example/y"),
            Err(AltinnError::ForeignLink)
        );
        assert_eq!(
            next_url(&base, "http://127.0.0.1:10/y"),
            Err(AltinnError::ForeignLink)
        );
    }
}
