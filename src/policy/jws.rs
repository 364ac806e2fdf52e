//! Strict compact-JWS parsing (check 4) and the JOSE header (check 5): three
//! unpadded base64url parts, header and payload JSON objects in which no
//! object, at any depth, names a member twice. The JSON is read in one pass
//! into a small tree whose strings borrow from the decoded bytes (copied only
//! when they hold an escape); the claims are read from it once and it is
//! dropped. Pure; no signature work here.

use std::borrow::Cow;
use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

/// Why a token is not a strict compact JWS (all map to `malformed_token`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwsError {
    #[error("not three dot-separated parts")]
    PartCount,
    #[error("a part is not unpadded base64url")]
    Base64,
    #[error("the {0} is not a JSON object without duplicate member names")]
    Json(&'static str),
    #[error("the JOSE header member {0:?} has the wrong type")]
    HeaderMemberType(&'static str),
}

/// A compact JWS split and its three parts decoded; the JSON not yet read.
/// The default (all empty) verifies with no key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedJws {
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
    /// Length of `header.payload` as sent: the signed message is
    /// `token[..signing_input_len]`.
    pub signing_input_len: usize,
    /// The raw signature bytes (empty when the third part is empty).
    pub signature: Vec<u8>,
}

/// A compact JWS whose header and payload are strict JSON objects, its
/// signature not yet checked. Borrows from its [`DecodedJws`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompactJws<'a> {
    pub header: Object<'a>,
    pub payload: Object<'a>,
}

/// Splits a compact JWS and decodes its parts. Every part must be canonical
/// unpadded base64url (no `=`, no stray trailing bits), so that each token
/// has exactly one spelling.
pub fn decode_compact(token: &str) -> Result<DecodedJws, JwsError> {
    let (header_b64, rest) = split_at_dot(token).ok_or(JwsError::PartCount)?;
    let (payload_b64, signature_b64) = split_at_dot(rest).ok_or(JwsError::PartCount)?;
    if memchr::memchr(b'.', signature_b64.as_bytes()).is_some() {
        return Err(JwsError::PartCount);
    }
    Ok(DecodedJws {
        header: decode_part(header_b64)?,
        payload: decode_part(payload_b64)?,
        signing_input_len: header_b64.len() + 1 + payload_b64.len(),
        signature: decode_part(signature_b64)?,
    })
}

impl DecodedJws {
    /// Reads header and payload: each must be a JSON object with no
    /// duplicate member names at any depth.
    pub fn parse(&self) -> Result<CompactJws<'_>, JwsError> {
        let header = strict_object(&self.header).ok_or(JwsError::Json("header"))?;
        let payload = strict_object(&self.payload).ok_or(JwsError::Json("payload"))?;
        Ok(CompactJws { header, payload })
    }
}

/// `text` split around its first `.` (a SIMD search: the payload part is
/// most of a 1-2 KB token).
fn split_at_dot(text: &str) -> Option<(&str, &str)> {
    let dot = memchr::memchr(b'.', text.as_bytes())?;
    // `.` is ASCII: both sides are on character boundaries.
    Some((text.get(..dot)?, text.get(dot + 1..)?))
}

fn decode_part(part: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| JwsError::Base64)
}

/// The JOSE header members the gateway reads. `jku`, `x5u`, `jwk` and `x5c`
/// are deliberately not read: keys come only from the issuer's JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    pub kid: Option<String>,
    /// The `alg` string as sent (checked against the issuer's list later).
    pub alg: Option<String>,
    /// `crit` is present (with any value): the gateway understands no
    /// extension, so such a token is refused.
    pub has_crit: bool,
}

impl JoseHeader {
    /// Reads `kid`, `alg` and `crit`; `kid` or `alg` of a type other than
    /// string is malformed.
    pub fn from_map(header: &Object<'_>) -> Result<Self, JwsError> {
        let string_member = |name: &'static str| match header.get(name) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.to_string())),
            Some(_) => Err(JwsError::HeaderMemberType(name)),
        };
        Ok(JoseHeader {
            kid: string_member("kid")?,
            alg: string_member("alg")?,
            has_crit: header.contains_key("crit"),
        })
    }
}

/// A JSON value read by [`strict_object`]; strings borrow from the bytes
/// read when they hold no escape.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// Every JSON number as the nearest `f64` (always finite: a number
    /// beyond `f64` is refused while parsing).
    Number(f64),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

impl Json<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Json::String(_))
    }
}

/// A JSON object: its members in document order, no name twice (compared
/// after unescaping).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Object<'a> {
    /// The member named `name` (names are unique: at most one).
    pub fn get(&self, name: &str) -> Option<&Json<'a>> {
        self.members
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, value)| value)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.members.iter().map(|(n, v)| (n.as_ref(), v))
    }
}

/// Parses `bytes` as one JSON object, refusing a duplicate member name in
/// any object at any depth (serde_json alone keeps the last one silently,
/// which would let a token mean two things). The grammar, the nesting limit
/// (128) and the number range are serde_json's.
/// Any JSON document, strictly (no duplicate member names at any depth, no
/// trailing bytes): for request bodies a route binds.
pub fn strict_value(bytes: &[u8]) -> Option<Json<'_>> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let StrictJson(value) = StrictJson::deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

pub fn strict_object(bytes: &[u8]) -> Option<Object<'_>> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let StrictJson(value) = StrictJson::deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    match value {
        Json::Object(object) => Some(object),
        _ => None,
    }
}

/// Whether two members share a name. Small objects (every object of a real
/// token) compare each pair; larger ones go through a hash set (randomly
/// keyed ahash; the hash only finds candidates, names are compared exactly),
/// so that a hostile object of thousands of members costs `n`, not `n²`
/// (a set is 4x cheaper than sorting the names here).
fn has_duplicate_name(members: &[(Cow<'_, str>, Json<'_>)]) -> bool {
    const PAIRWISE_UP_TO: usize = 16;
    if members.len() <= PAIRWISE_UP_TO {
        return members
            .iter()
            .enumerate()
            .any(|(i, (name, _))| members[..i].iter().any(|(other, _)| other == name));
    }
    let mut seen = HashSet::with_capacity_and_hasher(members.len(), ahash::RandomState::new());
    !members.iter().all(|(name, _)| seen.insert(name.as_ref()))
}

/// A [`Json`] whose deserialisation fails on duplicate member names.
struct StrictJson<'de>(Json<'de>);

impl<'de> Deserialize<'de> for StrictJson<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value without duplicate object keys")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        if v.is_finite() {
            Ok(Json::Number(v))
        } else {
            Err(E::custom("not a finite number"))
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(MemberName(name)) = access.next_key()? {
            let StrictJson(value) = access.next_value()?;
            members.push((name, value));
        }
        if has_duplicate_name(&members) {
            return Err(de::Error::custom("duplicate member name"));
        }
        Ok(Json::Object(Object { members }))
    }
}

/// An object member's name, borrowed when it holds no escape.
struct MemberName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(MemberNameVisitor)
            .map(MemberName)
    }
}

struct MemberNameVisitor;

impl<'de> Visitor<'de> for MemberNameVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both steps of check 4: decode the parts, read the JSON.
    fn check(token: &str) -> Result<(), JwsError> {
        decode_compact(token)?.parse().map(|_| ())
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn parses_a_well_formed_token() {
        let token = format!(
            "{}.{}.{}",
            b64(r#"{"kid":"k","alg":"RS256"}"#),
            b64(r#"{"a":[1,{"b":null}]}"#),
            b64("sig")
        );
        let decoded = decode_compact(&token).unwrap();
        let jws = decoded.parse().unwrap();
        assert_eq!(jws.header.get("kid").and_then(Json::as_str), Some("k"));
        let Some(Json::Array(a)) = jws.payload.get("a") else {
            panic!("a is an array")
        };
        let Json::Object(inner) = &a[1] else {
            panic!("a[1] is an object")
        };
        assert_eq!(inner.get("b"), Some(&Json::Null));
        assert_eq!(decoded.signature, b"sig");
        assert_eq!(
            &token[..decoded.signing_input_len],
            token.rsplit_once('.').unwrap().0
        );
        let header = JoseHeader::from_map(&jws.header).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k"));
        assert_eq!(header.alg.as_deref(), Some("RS256"));
        assert!(!header.has_crit);
    }

    #[test]
    fn refuses_wrong_part_counts() {
        let h = b64("{}");
        for token in [
            String::new(),
            h.clone(),
            format!("{h}.{h}"),
            format!("{h}.{h}.x.y"),
            format!("{h}.{h}.."),
        ] {
            assert_eq!(check(&token).unwrap_err(), JwsError::PartCount, "{token}");
        }
    }

    #[test]
    fn refuses_padding_and_non_url_alphabet() {
        // `{"a":1}` is 7 bytes: its base64 has one padding `=`.
        let padded = base64::engine::general_purpose::URL_SAFE.encode(r#"{"a":1}"#);
        assert!(padded.ends_with('='));
        let h = b64("{}");
        assert_eq!(
            check(&format!("{padded}.{h}.")).unwrap_err(),
            JwsError::Base64
        );
        assert_eq!(
            check(&format!("{h}.{padded}.")).unwrap_err(),
            JwsError::Base64
        );
        assert_eq!(
            check(&format!("{h}.{h}.AA==")).unwrap_err(),
            JwsError::Base64
        );
        assert_eq!(
            check(&format!("{h}.{h}.a+/b")).unwrap_err(),
            JwsError::Base64
        );
        assert_eq!(
            check(&format!("{h}.{h}.a b")).unwrap_err(),
            JwsError::Base64
        );
        // Non-canonical trailing bits: "AB" and "AA" would both decode to 0x00.
        assert_eq!(check(&format!("{h}.{h}.AB")).unwrap_err(), JwsError::Base64);
        assert!(check(&format!("{h}.{h}.AA")).is_ok());
    }

    #[test]
    fn refuses_duplicate_members_at_any_depth() {
        assert!(strict_object(br#"{"a":1,"a":1}"#).is_none());
        assert!(strict_object(br#"{"a":{"b":1,"b":2}}"#).is_none());
        assert!(strict_object(br#"{"a":[{"b":1},{"c":1,"c":1}]}"#).is_none());
        // The same name spelt with an escape is still the same name.
        assert!(strict_object(br#"{"a":1,"\u0061":2}"#).is_none());
        assert!(strict_object(br#"{"a":{"b":1},"b":{"a":1}}"#).is_some());
    }

    #[test]
    fn hostile_json_is_refused_without_panicking() {
        // Nesting far beyond serde_json's recursion limit: refused, no stack
        // overflow.
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(strict_object(deep.as_bytes()).is_none());
        let deep = format!(
            "{{\"a\":{}}}",
            "{\"a\":".repeat(200) + "1" + &"}".repeat(200)
        );
        assert!(strict_object(deep.as_bytes()).is_none());
        // Numbers beyond f64, lone surrogates, invalid UTF-8 in strings.
        assert!(strict_object(br#"{"exp":1e400}"#).is_none());
        assert!(strict_object(br#"{"exp":-1e400}"#).is_none());
        assert!(strict_object(br#"{"a":"\ud800"}"#).is_none());
        assert!(strict_object(b"{\"a\":\"\xff\"}").is_none());
        // NaN and Infinity are no JSON.
        assert!(strict_object(br#"{"exp":NaN}"#).is_none());
        assert!(strict_object(br#"{"exp":Infinity}"#).is_none());
        // An escaped spelling of a claim name duplicates it, at any depth.
        assert!(strict_object(br#"{"exp":1,"\u0065xp":2}"#).is_none());
        assert!(strict_object(br#"{"a":[{"ID":"x","\u0049D":"y"}]}"#).is_none());
        // Huge integers that still fit f64 parse (the claims decide).
        assert!(strict_object(br#"{"exp":123456789012345678901234567890}"#).is_some());
    }

    #[test]
    fn refuses_non_objects_and_trailing_data() {
        for text in [
            &b"[]"[..],
            b"1",
            b"\"x\"",
            b"null",
            b"{} {}",
            b"{",
            b"",
            b"{\"a\":1}x",
            b"\xff",
        ] {
            assert!(
                strict_object(text).is_none(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert!(strict_object(b" {} ").is_some());
    }

    #[test]
    fn header_member_types() {
        let map = strict_object(br#"{"kid":1,"alg":"RS256"}"#).unwrap();
        assert_eq!(
            JoseHeader::from_map(&map).unwrap_err(),
            JwsError::HeaderMemberType("kid")
        );
        let map = strict_object(br#"{"kid":"k","alg":null}"#).unwrap();
        assert_eq!(
            JoseHeader::from_map(&map).unwrap_err(),
            JwsError::HeaderMemberType("alg")
        );
        let map = strict_object(br#"{"kid":"k","alg":"RS256","crit":[]}"#).unwrap();
        assert!(JoseHeader::from_map(&map).unwrap().has_crit);
    }

    #[test]
    fn escaped_duplicate_names_are_refused_at_every_depth() {
        // Each pair names one member twice: once plainly, once (or both
        // times) through escapes that decode to the same name.
        for text in [
            // Top level: `\u0061ud` is `aud`.
            &br#"{"aud":"a","\u0061ud":"b"}"#[..],
            // Both spellings escaped, differently.
            br#"{"\u0061ud":"a","a\u0075d":"b"}"#,
            // A surrogate pair and the raw UTF-8 of the same character.
            "{\"\\ud83d\\ude00\":1,\"\u{1f600}\":2}".as_bytes(),
            // `\/` is `/`.
            br#"{"a/b":1,"a\/b":2}"#,
            // Inside a nested object.
            br#"{"consumer":{"ID":"0192:1","\u0049\u0044":"0192:2"}}"#,
            // Inside an object inside an array inside objects.
            br#"{"authorization_details":[{"type":"t","consentRights":[{"action":[],"\u0061ction":[]}]}]}"#,
            // Inside the metadata of a right, four levels down.
            br#"{"a":[{"b":[{"metadata":{"x":"1","\u0078":"2"}}]}]}"#,
        ] {
            assert!(
                strict_object(text).is_none(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // Names that differ only in case, or escape to different
        // characters, are different names.
        let object = strict_object(br#"{"aud":"a","Aud":"b","\u0061uD":"c"}"#).unwrap();
        assert_eq!(object.len(), 3);
        assert_eq!(object.get("aud").and_then(Json::as_str), Some("a"));
        assert_eq!(object.get("auD").and_then(Json::as_str), Some("c"));
    }

    #[test]
    fn duplicates_in_large_objects_are_refused() {
        // More members than the pairwise check covers: the sorted check,
        // wherever the two spellings sit.
        let members: Vec<String> = (0..40).map(|i| format!("\"m{i:02}\":{i}")).collect();
        let object = |extra: &str, at: usize| {
            let mut members = members.clone();
            members.insert(at, extra.to_string());
            format!("{{{}}}", members.join(","))
        };
        assert!(strict_object(object("\"x\":1", 0).as_bytes()).is_some());
        for at in [0, 20, 40] {
            for extra in [r#""m07":1"#, r#""\u006d07":1"#, r#""m\u00307":1"#] {
                let text = object(extra, at);
                assert!(strict_object(text.as_bytes()).is_none(), "{text}");
            }
        }
        // A duplicate inside a large object nested in an array.
        let text = format!("{{\"a\":[1,{}]}}", object(r#""\u006d39":1"#, 3));
        assert!(strict_object(text.as_bytes()).is_none());
        // Many members, none twice: accepted, each found.
        let wide = format!(
            "{{{}}}",
            (0..2000)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let object = strict_object(wide.as_bytes()).unwrap();
        assert_eq!(object.len(), 2000);
        assert_eq!(object.get("k1999"), Some(&Json::Number(1999.0)));
    }

    #[test]
    fn strings_read_the_same_borrowed_or_unescaped() {
        let object = strict_object(
            br#"{"plain":"urn:altinn:consent","escaped":"urn:altinn:\u0063onsent","tab":"a\tb"}"#,
        )
        .unwrap();
        let Some(Json::String(plain)) = object.get("plain") else {
            panic!("a string")
        };
        assert!(matches!(plain, Cow::Borrowed(_)), "no escape: no copy");
        assert_eq!(object.get("escaped"), object.get("plain"));
        assert_eq!(object.get("tab").and_then(Json::as_str), Some("a\tb"));
        // Numbers: integers, fractions and exponents as f64.
        let object = strict_object(br#"{"i":-3,"u":18446744073709551615,"f":1.5e3}"#).unwrap();
        assert_eq!(object.get("i"), Some(&Json::Number(-3.0)));
        assert_eq!(object.get("u"), Some(&Json::Number(u64::MAX as f64)));
        assert_eq!(object.get("f"), Some(&Json::Number(1500.0)));
        // Members keep their document order.
        let object = strict_object(br#"{"b":1,"a":2,"c":3}"#).unwrap();
        let names: Vec<&str> = object.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["b", "a", "c"]);
    }
}
