//! Typed claims (check 10): the token's standard and Maskinporten claims and,
//! for consent routes, its `urn:altinn:consent` elements, each read once,
//! type-checked, and checked free of control characters where the gateway
//! forwards them. Pure; the result is cached with the verified token.

use crate::policy::jws::{Json, Object};
use crate::time::parse_rfc3339;

/// The `type` of a consent element in `authorization_details`.
pub const CONSENT_TYPE: &str = "urn:altinn:consent";
/// The `type` of a consent right's resource entry.
pub const RESOURCE_TYPE: &str = "urn:altinn:resource";
/// URN prefix of a person (11-digit national identity number).
pub const PERSON_URN_PREFIX: &str = "urn:altinn:person:identifier-no:";
/// URN prefix of an organisation (9-digit organisation number).
pub const ORGANIZATION_URN_PREFIX: &str = "urn:altinn:organization:identifier-no:";

/// Why claims are ill-typed or unsafe (`malformed_token`); the text is for
/// `explain` and never holds a claim value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimError(pub String);

impl ClaimError {
    fn new(what: impl Into<String>) -> Self {
        ClaimError(what.into())
    }
}

/// The token-level claims, well-typed.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenClaims {
    pub exp: f64,
    pub nbf: Option<f64>,
    pub iat: Option<f64>,
    /// `aud`, a string read as a one-element list.
    pub aud: Option<Vec<String>>,
    /// `consumer.ID`.
    pub consumer: String,
    /// `supplier.ID`.
    pub supplier: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub jti: Option<String>,
}

/// Everything check 10 needs, computed once per token.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimSet {
    /// `iss` when it is a string (read before the signature, for check 6).
    pub iss: Option<String>,
    pub has_exp: bool,
    pub has_consumer: bool,
    pub has_iat: bool,
    /// The token claims; `Err` when present claims are ill-typed or unsafe
    /// (when `exp` or `consumer` is absent, `has_*` already decide).
    pub token: Result<TokenClaims, ClaimError>,
    /// The consent elements (only consent routes read them).
    pub consent: Result<Vec<ConsentElement>, ClaimError>,
}

/// A consent's recipient, as written in the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// `{"authority": ..., "ID": "0192:<orgnr>"}`.
    Party(String),
    /// The older URN string form.
    Urn(String),
}

impl Recipient {
    /// The recipient as `0192:<orgnr>`, or `None` for a URN that does not
    /// name a Norwegian organisation.
    pub fn as_iso6523(&self) -> Option<String> {
        match self {
            Recipient::Party(id) => Some(id.clone()),
            Recipient::Urn(urn) => {
                let orgnr = urn.strip_prefix(ORGANIZATION_URN_PREFIX)?;
                is_digits(orgnr, 9).then(|| format!("0192:{orgnr}"))
            }
        }
    }
}

/// One right of a consent element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRight {
    pub actions: Vec<String>,
    /// `(type, value)` of each resource entry.
    pub resources: Vec<(String, String)>,
    /// `metadata` (or `metaData`), keys lowercased, sorted by key; empty when
    /// the right has none.
    pub metadata: Vec<(String, String)>,
}

/// One `urn:altinn:consent` element, well-typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentElement {
    /// Position in `authorization_details` (0-based), for `explain`.
    pub position: usize,
    pub id: String,
    pub from: String,
    pub to: Recipient,
    pub consented: String,
    pub consented_at: f64,
    pub valid_to: String,
    pub valid_to_at: f64,
    pub rights: Vec<ConsentRight>,
}

impl ClaimSet {
    /// Reads the claims of a payload. Never fails: the outcome is recorded,
    /// and checks 6 and 10 read it in their turn.
    pub fn from_payload(payload: &Object<'_>) -> ClaimSet {
        ClaimSet {
            iss: payload.get("iss").and_then(Json::as_str).map(str::to_owned),
            has_exp: payload.contains_key("exp"),
            has_consumer: payload.contains_key("consumer"),
            has_iat: payload.contains_key("iat"),
            token: token_claims(payload),
            consent: consent_elements(payload),
        }
    }
}

/// Where a member of a consent element sits, for error texts: formatted
/// only when an error is built (`authorization_details[0].consentRights[1].
/// resource.`).
#[derive(Debug, Clone, Copy)]
struct Path {
    element: usize,
    right: Option<usize>,
    member: Option<&'static str>,
}

impl Path {
    fn element(element: usize) -> Path {
        Path {
            element,
            right: None,
            member: None,
        }
    }

    fn right(self, right: usize) -> Path {
        Path {
            right: Some(right),
            ..self
        }
    }

    fn member(self, member: &'static str) -> Path {
        Path {
            member: Some(member),
            ..self
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "authorization_details[{}].", self.element)?;
        if let Some(right) = self.right {
            write!(f, "consentRights[{right}].")?;
        }
        if let Some(member) = self.member {
            write!(f, "{member}.")?;
        }
        Ok(())
    }
}

fn token_claims(payload: &Object<'_>) -> Result<TokenClaims, ClaimError> {
    let exp = number(payload, "exp")?.ok_or_else(|| ClaimError::new("exp is absent"))?;
    let consumer =
        party_id(payload, "consumer")?.ok_or_else(|| ClaimError::new("consumer is absent"))?;
    let aud = match payload.get("aud") {
        None => None,
        Some(Json::String(s)) => Some(vec![s.to_string()]),
        Some(Json::Array(items)) => Some(
            strings(items)
                .ok_or_else(|| ClaimError::new("aud is not a string or an array of strings"))?,
        ),
        Some(_) => {
            return Err(ClaimError::new(
                "aud is not a string or an array of strings",
            ))
        }
    };
    Ok(TokenClaims {
        exp,
        nbf: number(payload, "nbf")?,
        iat: number(payload, "iat")?,
        aud,
        consumer,
        supplier: party_id(payload, "supplier")?,
        scope: forwarded_string(payload, "scope")?,
        client_id: forwarded_string(payload, "client_id")?,
        jti: forwarded_string(payload, "jti")?,
    })
}

fn number(map: &Object<'_>, name: &str) -> Result<Option<f64>, ClaimError> {
    match map.get(name) {
        None => Ok(None),
        Some(Json::Number(n)) => Some(*n)
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| ClaimError::new(format!("{name} is not a finite number"))),
        Some(_) => Err(ClaimError::new(format!("{name} is not a JSON number"))),
    }
}

/// A string claim the gateway forwards: well-typed and free of control
/// characters.
fn forwarded_string(map: &Object<'_>, name: &str) -> Result<Option<String>, ClaimError> {
    match map.get(name) {
        None => Ok(None),
        Some(Json::String(s)) => safe(s, || name.to_owned()).map(|s| Some(s.to_owned())),
        Some(_) => Err(ClaimError::new(format!("{name} is not a string"))),
    }
}

/// A required string member of an object inside a consent element; `ctx`
/// says where, in error texts.
fn required_string(
    map: &Object<'_>,
    name: &str,
    ctx: impl std::fmt::Display,
) -> Result<String, ClaimError> {
    match map.get(name) {
        Some(Json::String(s)) => safe(s, || format!("{ctx}{name}")).map(str::to_owned),
        Some(_) => Err(ClaimError::new(format!("{ctx}{name} is not a string"))),
        None => Err(ClaimError::new(format!("{ctx}{name} is absent"))),
    }
}

/// `consumer` / `supplier`: an object with a string `ID`.
fn party_id(map: &Object<'_>, name: &str) -> Result<Option<String>, ClaimError> {
    match map.get(name) {
        None => Ok(None),
        Some(Json::Object(party)) => match party.get("ID") {
            Some(Json::String(id)) => safe(id, || format!("{name}.ID")).map(|s| Some(s.to_owned())),
            _ => Err(ClaimError::new(format!("{name}.ID is not a string"))),
        },
        Some(_) => Err(ClaimError::new(format!("{name} is not an object"))),
    }
}

/// `value` when it holds no control character; `what` names it in the
/// error (built only then: this runs on every claim of every fresh token).
fn safe(value: &str, what: impl FnOnce() -> String) -> Result<&str, ClaimError> {
    // Printable ASCII has no control character; anything else is decoded
    // and checked character by character (C0, DEL and the C1 range).
    let printable_ascii = value
        .bytes()
        .fold(true, |ok, b| ok & (b' '..=b'~').contains(&b));
    if !printable_ascii && value.chars().any(char::is_control) {
        Err(ClaimError::new(format!(
            "{} holds a control character",
            what()
        )))
    } else {
        Ok(value)
    }
}

fn consent_elements(payload: &Object<'_>) -> Result<Vec<ConsentElement>, ClaimError> {
    let details = match payload.get("authorization_details") {
        None => return Ok(Vec::new()),
        Some(Json::Array(items)) => items,
        Some(_) => return Err(ClaimError::new("authorization_details is not an array")),
    };
    let mut elements = Vec::with_capacity(details.len());
    for (position, item) in details.iter().enumerate() {
        let ctx = Path::element(position);
        let Json::Object(element) = item else {
            return Err(ClaimError::new(format!("{ctx} is not an object")));
        };
        let kind = match element.get("type") {
            Some(Json::String(kind)) => kind,
            _ => return Err(ClaimError::new(format!("{ctx}type is not a string"))),
        };
        if kind == CONSENT_TYPE {
            elements.push(consent_element(element, position, ctx)?);
        }
    }
    elements.shrink_to_fit();
    Ok(elements)
}

fn consent_element(
    element: &Object<'_>,
    position: usize,
    ctx: Path,
) -> Result<ConsentElement, ClaimError> {
    let to = match element.get("to") {
        Some(Json::String(urn)) => Recipient::Urn(safe(urn, || format!("{ctx}to"))?.to_owned()),
        Some(Json::Object(party)) => {
            if party.get("authority").is_some_and(|a| !a.is_string()) {
                return Err(ClaimError::new(format!(
                    "{ctx}to.authority is not a string"
                )));
            }
            Recipient::Party(required_string(party, "ID", ctx.member("to"))?)
        }
        Some(_) => {
            return Err(ClaimError::new(format!(
                "{ctx}to is not an object or a string"
            )))
        }
        None => return Err(ClaimError::new(format!("{ctx}to is absent"))),
    };
    let consented = required_string(element, "consented", ctx)?;
    let consented_at = parse_rfc3339(&consented)
        .ok_or_else(|| ClaimError::new(format!("{ctx}consented is not an RFC 3339 time")))?;
    let valid_to = required_string(element, "validTo", ctx)?;
    let valid_to_at = parse_rfc3339(&valid_to)
        .ok_or_else(|| ClaimError::new(format!("{ctx}validTo is not an RFC 3339 time")))?;
    let rights = match element.get("consentRights") {
        Some(Json::Array(rights)) => exact_vec(
            rights.len(),
            rights
                .iter()
                .enumerate()
                .map(|(i, right)| consent_right(right, ctx.right(i))),
        )?,
        Some(_) => {
            return Err(ClaimError::new(format!(
                "{ctx}consentRights is not an array"
            )))
        }
        None => return Err(ClaimError::new(format!("{ctx}consentRights is absent"))),
    };
    Ok(ConsentElement {
        position,
        id: required_string(element, "id", ctx)?,
        from: required_string(element, "from", ctx)?,
        to,
        consented,
        consented_at,
        valid_to,
        valid_to_at,
        rights,
    })
}

fn consent_right(right: &Json<'_>, ctx: Path) -> Result<ConsentRight, ClaimError> {
    let Json::Object(right) = right else {
        return Err(ClaimError::new(format!("{ctx} is not an object")));
    };
    let actions = match right.get("action") {
        Some(Json::Array(actions)) => strings(actions)
            .ok_or_else(|| ClaimError::new(format!("{ctx}action is not an array of strings")))?,
        _ => {
            return Err(ClaimError::new(format!(
                "{ctx}action is not an array of strings"
            )))
        }
    };
    let resources = match right.get("resource") {
        Some(Json::Array(resources)) => exact_vec(
            resources.len(),
            resources.iter().map(|r| match r {
                Json::Object(r) => Ok((
                    required_string(r, "type", ctx.member("resource"))?,
                    required_string(r, "value", ctx.member("resource"))?,
                )),
                _ => Err(ClaimError::new(format!("{ctx}resource holds a non-object"))),
            }),
        )?,
        _ => return Err(ClaimError::new(format!("{ctx}resource is not an array"))),
    };
    let metadata = match (right.get("metadata"), right.get("metaData")) {
        (Some(_), Some(_)) => {
            return Err(ClaimError::new(format!(
                "{ctx} has both metadata and metaData"
            )))
        }
        (Some(m), None) | (None, Some(m)) => metadata(m, ctx)?,
        (None, None) => Vec::new(),
    };
    Ok(ConsentRight {
        actions,
        resources,
        metadata,
    })
}

fn metadata(value: &Json<'_>, ctx: Path) -> Result<Vec<(String, String)>, ClaimError> {
    let Json::Object(map) = value else {
        return Err(ClaimError::new(format!("{ctx}metadata is not an object")));
    };
    // By name, so that of several faults the same one is named whatever the
    // members' order in the token.
    let mut members: Vec<(&str, &Json<'_>)> = map.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut entries = Vec::with_capacity(members.len());
    for (key, value) in members {
        let Json::String(value) = value else {
            return Err(ClaimError::new(format!(
                "{ctx}metadata holds a non-string value"
            )));
        };
        safe(key, || format!("{ctx}metadata key"))?;
        safe(value, || format!("{ctx}metadata value"))?;
        entries.push((key.to_lowercase(), value.to_string()));
    }
    entries.sort();
    if entries.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(ClaimError::new(format!(
            "{ctx}metadata has two keys equal after lowercasing"
        )));
    }
    Ok(entries)
}

/// Collects `len` results into a vector of exactly that capacity (these
/// vectors live in the token cache; `collect` would round small ones up to
/// four elements), stopping at the first error.
fn exact_vec<T>(
    len: usize,
    items: impl Iterator<Item = Result<T, ClaimError>>,
) -> Result<Vec<T>, ClaimError> {
    let mut out = Vec::with_capacity(len);
    for item in items {
        out.push(item?);
    }
    Ok(out)
}

/// An array of strings, owned, or `None` when an item is not a string.
fn strings(items: &[Json<'_>]) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(item.as_str()?.to_owned());
    }
    Some(out)
}

fn is_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::jws::strict_object;
    use serde_json::{json, Value};

    /// The claims of `v` as the gateway reads them: serialised, then parsed
    /// by the strict reader of check 4.
    fn claims(v: Value) -> ClaimSet {
        let bytes = serde_json::to_vec(&v).unwrap();
        ClaimSet::from_payload(&strict_object(&bytes).unwrap())
    }

    fn element() -> Value {
        json!({
            "type": CONSENT_TYPE,
            "id": "c1",
            "from": "urn:altinn:person:identifier-no:17839116535",
            "to": {"authority": "iso6523-actorid-upis", "ID": "0192:310497460"},
            "consented": "2026-03-02T08:14:02.318877+00:00",
            "validTo": "2026-09-02T08:13:40.5512+00:00",
            "consentRights": [{"action": ["consent"], "resource": [{"type": RESOURCE_TYPE, "value": "r"}], "metadata": {"InntektsAar": "2025"}}]
        })
    }

    fn base() -> Value {
        json!({"iss": "i", "exp": 10, "consumer": {"ID": "0192:310497460"}, "authorization_details": [element()]})
    }

    #[test]
    fn reads_well_typed_claims() {
        let set = claims(
            json!({"iss": "i", "exp": 10.5, "nbf": 1, "iat": 2, "aud": "a",
            "consumer": {"authority": "x", "ID": "0192:1"}, "supplier": {"ID": "0192:2"},
            "scope": "a b", "client_id": "c", "jti": "j"}),
        );
        assert_eq!(set.iss.as_deref(), Some("i"));
        assert!(set.has_exp && set.has_consumer && set.has_iat);
        let t = set.token.unwrap();
        assert_eq!(t.exp, 10.5);
        assert_eq!(t.aud, Some(vec!["a".to_string()]));
        assert_eq!(t.supplier.as_deref(), Some("0192:2"));
        assert_eq!(set.consent.unwrap(), vec![]);
    }

    #[test]
    fn ill_typed_claims_are_errors() {
        for (name, bad) in [
            ("exp", json!("10")),
            ("nbf", json!(null)),
            ("iat", json!(true)),
            ("aud", json!(1)),
            ("aud", json!(["a", 1])),
            ("consumer", json!("0192:1")),
            ("consumer", json!({"ID": 1})),
            ("supplier", json!({"authority": "x"})),
            ("scope", json!(["a"])),
            ("client_id", json!(1)),
            ("jti", json!({})),
            ("scope", json!("a\nb")),
            ("jti", json!("a\u{7f}")),
            ("client_id", json!("a\u{85}")),
        ] {
            let mut v = base();
            v[name] = bad.clone();
            assert!(claims(v).token.is_err(), "{name} = {bad}");
        }
        let mut v = base();
        v["consumer"]["ID"] = json!("0192:1\r\nX-Evil: 1");
        assert!(claims(v).token.is_err());
    }

    #[test]
    fn absence_is_recorded() {
        let set = claims(json!({"iss": 1}));
        assert!(set.iss.is_none());
        assert!(!set.has_exp && !set.has_consumer && !set.has_iat);
    }

    #[test]
    fn reads_consent_elements_and_skips_other_types() {
        let mut v = base();
        v["authorization_details"] =
            json!([{"type": "urn:altinn:systemuser", "anything": 1}, element()]);
        let elements = claims(v).consent.unwrap();
        assert_eq!(elements.len(), 1);
        let e = &elements[0];
        assert_eq!(e.position, 1);
        assert_eq!(e.to.as_iso6523().as_deref(), Some("0192:310497460"));
        assert_eq!(
            e.rights[0].metadata,
            vec![("inntektsaar".to_string(), "2025".to_string())]
        );
        assert!((e.consented_at - 1_772_439_242.318_877).abs() < 1e-5);
    }

    type Mutation = Box<dyn Fn(&mut Value)>;

    #[test]
    fn ill_typed_consent_elements_are_errors() {
        let mutations: Vec<(&str, Mutation)> = vec![
            (
                "details not array",
                Box::new(|v| v["authorization_details"] = json!({})),
            ),
            (
                "element not object",
                Box::new(|v| v["authorization_details"] = json!(["x"])),
            ),
            (
                "type missing",
                Box::new(|v| {
                    v["authorization_details"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("type");
                }),
            ),
            (
                "id number",
                Box::new(|v| v["authorization_details"][0]["id"] = json!(1)),
            ),
            (
                "id missing",
                Box::new(|v| {
                    v["authorization_details"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("id");
                }),
            ),
            (
                "from control",
                Box::new(|v| v["authorization_details"][0]["from"] = json!("urn:x\u{0}")),
            ),
            (
                "to number",
                Box::new(|v| v["authorization_details"][0]["to"] = json!(1)),
            ),
            (
                "to.ID missing",
                Box::new(|v| v["authorization_details"][0]["to"] = json!({"authority": "a"})),
            ),
            (
                "validTo not time",
                Box::new(|v| v["authorization_details"][0]["validTo"] = json!("tomorrow")),
            ),
            (
                "consented 8 digits",
                Box::new(|v| {
                    v["authorization_details"][0]["consented"] =
                        json!("2026-03-02T08:14:02.31887712+00:00")
                }),
            ),
            (
                "rights not array",
                Box::new(|v| v["authorization_details"][0]["consentRights"] = json!({})),
            ),
            (
                "action string",
                Box::new(|v| {
                    v["authorization_details"][0]["consentRights"][0]["action"] = json!("consent")
                }),
            ),
            (
                "resource value number",
                Box::new(|v| {
                    v["authorization_details"][0]["consentRights"][0]["resource"][0]["value"] =
                        json!(1)
                }),
            ),
            (
                "metadata value number",
                Box::new(|v| {
                    v["authorization_details"][0]["consentRights"][0]["metadata"] = json!({"a": 1})
                }),
            ),
            (
                "metadata dup keys",
                Box::new(|v| {
                    v["authorization_details"][0]["consentRights"][0]["metadata"] =
                        json!({"aar": "1", "AAR": "2"})
                }),
            ),
            (
                "metadata and metaData",
                Box::new(|v| {
                    v["authorization_details"][0]["consentRights"][0]["metaData"] = json!({})
                }),
            ),
            (
                "metadata control",
                Box::new(|v| {
                    v["authorization_details"][0]["consentRights"][0]["metadata"] =
                        json!({"a": "x\ty"})
                }),
            ),
        ];
        for (name, mutate) in mutations {
            let mut v = base();
            mutate(&mut v);
            assert!(claims(v).consent.is_err(), "{name}");
        }
    }

    #[test]
    fn metadata_spelling_meta_data_is_read() {
        let mut v = base();
        let right = &mut v["authorization_details"][0]["consentRights"][0];
        let m = right.as_object_mut().unwrap().remove("metadata").unwrap();
        right["metaData"] = m;
        assert_eq!(claims(v).consent.unwrap()[0].rights[0].metadata.len(), 1);
    }

    #[test]
    fn recipient_urn_form() {
        let urn = |s: &str| Recipient::Urn(s.to_string()).as_iso6523();
        assert_eq!(
            urn("urn:altinn:organization:identifier-no:310497460").as_deref(),
            Some("0192:310497460")
        );
        assert_eq!(urn("urn:altinn:organization:identifier-no:31049746"), None);
        assert_eq!(urn("urn:altinn:person:identifier-no:310497460"), None);
    }

    #[test]
    fn rfc3339_shapes() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:10Z"), Some(10.0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:10+01:00"), Some(10.0));
        assert_eq!(parse_rfc3339("1970-01-01t00:00:10.5z"), Some(10.5));
        assert!(parse_rfc3339("1970-01-01T00:00:10.1234567Z").is_some());
        for bad in [
            "1970-01-01T00:00:10.12345678Z",
            "1970-01-01T00:00:10.Z",
            "1970-01-01 00:00:10Z",
            "1970-01-01T00:00:10",
            "1970-13-01T00:00:10Z",
            "1970-01-01T00:00:10+0100",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn control_characters_are_found_in_any_encoding() {
        for ok in [
            "",
            "a b",
            " ~",
            "0192:310497460",
            "\u{a0}",
            "Ærlig Øl Å",
            "\u{1f600}",
        ] {
            assert!(safe(ok, String::new).is_ok(), "{ok:?}");
        }
        for bad in [
            "\u{0}", "a\u{1f}", "\t", "\r\n", "x\u{7f}", "\u{80}", "é\u{85}", "\u{9f}",
        ] {
            assert!(safe(bad, String::new).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_faults_are_named_the_same_in_any_member_order() {
        let texts = [r#"{"b":1,"a":"x\u0000"}"#, r#"{"a":"x\u0000","b":1}"#];
        let errors: Vec<ClaimError> = texts
            .iter()
            .map(|text| {
                let json = strict_object(text.as_bytes()).unwrap();
                metadata(&Json::Object(json), Path::element(0).right(0)).unwrap_err()
            })
            .collect();
        assert_eq!(errors[0], errors[1]);
        assert_eq!(
            errors[0].0,
            "authorization_details[0].consentRights[0].metadata value holds a control character"
        );
    }

    #[test]
    fn error_texts_name_the_place() {
        let mut v = base();
        v["authorization_details"][0]["consentRights"][0]["resource"][0]["value"] = json!(1);
        assert_eq!(
            claims(v).consent.unwrap_err().0,
            "authorization_details[0].consentRights[0].resource.value is not a string"
        );
        let mut v = base();
        v["authorization_details"][0]["to"] = json!({"ID": 1});
        assert_eq!(
            claims(v).consent.unwrap_err().0,
            "authorization_details[0].to.ID is not a string"
        );
        let mut v = base();
        v["authorization_details"] = json!([element(), 7]);
        assert_eq!(
            claims(v).consent.unwrap_err().0,
            "authorization_details[1]. is not an object"
        );
    }

    #[test]
    fn cached_vectors_hold_no_spare_capacity() {
        let mut v = base();
        v["authorization_details"] =
            json!([{"type": "urn:altinn:systemuser"}, element(), element()]);
        v["aud"] = json!(["a", "b", "c"]);
        let set = claims(v);
        let elements = set.consent.unwrap();
        assert_eq!((elements.len(), elements.capacity()), (2, 2));
        let right = &elements[0].rights[0];
        assert_eq!(elements[0].rights.capacity(), 1);
        assert_eq!(right.actions.capacity(), 1);
        assert_eq!(right.resources.capacity(), 1);
        assert_eq!(right.metadata.capacity(), 1);
        assert_eq!(set.token.unwrap().aud.unwrap().capacity(), 3);
    }
}
