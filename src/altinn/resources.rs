//! Consent resources in the Resource Registry (`check --online`): fetches a
//! route's resources (`resourceregistry/api/v1/resource/{id}`, public) and
//! reports one that is unknown, not of type consent, or whose
//! `consentMetadata` keys differ from the route's `metadata.required`.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::transport::{parse_url, Transport};
use super::AltinnError;

/// What `check --online` needs of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentResource {
    pub resource_type: String,
    /// `consentMetadata` keys, lowercased (keys compare case-insensitively).
    pub metadata_keys: BTreeSet<String>,
    pub one_time: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResource {
    #[serde(default)]
    resource_type: Option<String>,
    #[serde(default)]
    consent_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    is_one_time_consent: Option<bool>,
}

/// The resource `id` (a bare identifier or `urn:altinn:resource:<id>`);
/// `None` when the registry does not know it (404).
pub async fn fetch_resource(
    transport: &Transport,
    platform_url: &str,
    id: &str,
) -> Result<Option<ConsentResource>, AltinnError> {
    let bare = id.strip_prefix("urn:altinn:resource:").unwrap_or(id);
    let mut url = parse_url(&format!("{platform_url}/resourceregistry/api/v1/resource"))?;
    url.path_segments_mut()
        .map_err(|_| AltinnError::Client("the platform URL cannot take a path".into()))?
        .push(bare);
    let answer = transport.get_public(&url).await?;
    match answer.status {
        200 => parse_resource(&answer.body).map(Some),
        404 => Ok(None),
        other => Err(AltinnError::Status(other)),
    }
}

/// Parses a resource document.
pub fn parse_resource(body: &[u8]) -> Result<ConsentResource, AltinnError> {
    let raw: RawResource = serde_json::from_slice(body)
        .map_err(|e| AltinnError::Malformed(format!("resource: {e}")))?;
    Ok(ConsentResource {
        resource_type: raw.resource_type.unwrap_or_default(),
        metadata_keys: raw
            .consent_metadata
            .unwrap_or_default()
            .keys()
            .map(|k| k.to_lowercase())
            .collect(),
        one_time: raw.is_one_time_consent.unwrap_or(false),
    })
}

/// What is wrong with `resource` for a route requiring `required` keys;
/// empty when it fits.
pub fn review(resource: &ConsentResource, required: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if !resource.resource_type.eq_ignore_ascii_case("consent") {
        problems.push(format!(
            "is not a consent resource (resourceType `{}`)",
            resource.resource_type
        ));
        return problems;
    }
    let required: BTreeSet<String> = required.iter().map(|k| k.to_lowercase()).collect();
    let missing: Vec<&String> = resource.metadata_keys.difference(&required).collect();
    let extra: Vec<&String> = required.difference(&resource.metadata_keys).collect();
    if !missing.is_empty() || !extra.is_empty() {
        problems.push(format!(
            "consentMetadata keys {:?} differ from metadata.required {:?} (registry only: {missing:?}; route only: {extra:?})",
            resource.metadata_keys, required
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_reviewed_against_the_route() {
        let consent = parse_resource(
            br#"{"identifier":"x","resourceType":"Consent","consentMetadata":{"InntektsAar":{"optional":false}},"isOneTimeConsent":true}"#,
        )
        .unwrap();
        assert!(consent.one_time);
        assert!(review(&consent, &["inntektsaar".into()]).is_empty());
        assert_eq!(review(&consent, &[]).len(), 1);
        assert_eq!(
            review(&consent, &["inntektsaar".into(), "x".into()]).len(),
            1
        );
        let generic = parse_resource(br#"{"resourceType":"GenericAccessResource"}"#).unwrap();
        assert!(review(&generic, &[])[0].contains("not a consent resource"));
        assert!(parse_resource(b"[").is_err());
    }
}
