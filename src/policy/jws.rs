//! Strict compact-JWS parsing (check 4) and the JOSE header (check 5): three
//! unpadded base64url parts, header and payload JSON objects in which no
//! object, at any depth, names a member twice. Pure; no signature work here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
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

/// A compact JWS split and decoded, its signature not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactJws {
    pub header: Map<String, Value>,
    pub payload: Map<String, Value>,
    /// Length of `header.payload` as sent: the signed message is
    /// `token[..signing_input_len]`.
    pub signing_input_len: usize,
    /// The raw signature bytes (empty when the third part is empty).
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Every part must be canonical unpadded
/// base64url (no `=`, no stray trailing bits), so that each token has exactly
/// one spelling; header and payload must be JSON objects with no duplicate
/// member names at any depth.
pub fn parse_compact(token: &str) -> Result<CompactJws, JwsError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::PartCount);
    };
    let header_bytes = decode_part(header_b64)?;
    let payload_bytes = decode_part(payload_b64)?;
    let signature = decode_part(signature_b64)?;
    let header = strict_object(&header_bytes).ok_or(JwsError::Json("header"))?;
    let payload = strict_object(&payload_bytes).ok_or(JwsError::Json("payload"))?;
    Ok(CompactJws {
        header,
        payload,
        signing_input_len: header_b64.len() + 1 + payload_b64.len(),
        signature,
    })
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
    pub fn from_map(header: &Map<String, Value>) -> Result<Self, JwsError> {
        let string_member = |name: &'static str| match header.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JwsError::HeaderMemberType(name)),
        };
        Ok(JoseHeader {
            kid: string_member("kid")?,
            alg: string_member("alg")?,
            has_crit: header.contains_key("crit"),
        })
    }
}

/// Parses `bytes` as one JSON object, refusing a duplicate member name in
/// any object at any depth (serde_json alone keeps the last one silently,
/// which would let a token mean two things).
pub fn strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let StrictValue(value) = StrictValue::deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A `serde_json::Value` whose deserialisation fails on duplicate keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value without duplicate object keys")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom("duplicate member name"));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let jws = parse_compact(&token).unwrap();
        assert_eq!(jws.header["kid"], "k");
        assert_eq!(jws.payload["a"][1]["b"], Value::Null);
        assert_eq!(jws.signature, b"sig");
        assert_eq!(
            &token[..jws.signing_input_len],
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
            assert_eq!(
                parse_compact(&token).unwrap_err(),
                JwsError::PartCount,
                "{token}"
            );
        }
    }

    #[test]
    fn refuses_padding_and_non_url_alphabet() {
        // `{"a":1}` is 7 bytes: its base64 has one padding `=`.
        let padded = base64::engine::general_purpose::URL_SAFE.encode(r#"{"a":1}"#);
        assert!(padded.ends_with('='));
        let h = b64("{}");
        assert_eq!(
            parse_compact(&format!("{padded}.{h}.")).unwrap_err(),
            JwsError::Base64
        );
        assert_eq!(
            parse_compact(&format!("{h}.{padded}.")).unwrap_err(),
            JwsError::Base64
        );
        assert_eq!(
            parse_compact(&format!("{h}.{h}.AA==")).unwrap_err(),
            JwsError::Base64
        );
        assert_eq!(
            parse_compact(&format!("{h}.{h}.a+/b")).unwrap_err(),
            JwsError::Base64
        );
        assert_eq!(
            parse_compact(&format!("{h}.{h}.a b")).unwrap_err(),
            JwsError::Base64
        );
        // Non-canonical trailing bits: "AB" and "AA" would both decode to 0x00.
        assert_eq!(
            parse_compact(&format!("{h}.{h}.AB")).unwrap_err(),
            JwsError::Base64
        );
        assert!(parse_compact(&format!("{h}.{h}.AA")).is_ok());
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
}
