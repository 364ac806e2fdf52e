//! Body bindings (SPEC section 13, "Routes"): the request body a route's
//! `subject` or `metadata.match` reads, checked and parsed strictly, so the
//! value the gateway compares is the one a lenient backend would read.
//! Pure: the glue buffers the body (at most `max_body_bytes`) and forwards it
//! byte for byte.

use std::borrow::Cow;

use http::HeaderMap;

use crate::config::{Binding, BodyField, ConsentRule};
use crate::error::Reason;
use crate::header_names::list_items;
use crate::policy::jws::{strict_value, Json};

/// The request body as the glue read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody<'a> {
    /// The whole body, within the route's `max_body_bytes`.
    Complete(&'a [u8]),
    /// More than `max_body_bytes` arrived (the rest was not read).
    TooLarge,
}

/// A body parsed for its bindings.
#[derive(Debug)]
pub enum ParsedBody<'a> {
    Json(Json<'a>),
    /// Every `name=value` pair, both decoded (`+` is a space).
    Form(Vec<(Cow<'a, str>, Cow<'a, str>)>),
}

/// Which kind of body a rule's bindings read; `None` when none reads it.
pub fn bound_kind(rule: &ConsentRule) -> Option<Kind> {
    let bindings = rule
        .subject
        .iter()
        .chain(rule.metadata_match.iter().map(|(_, b)| b));
    bindings.into_iter().find_map(|binding| match binding {
        Binding::Body(BodyField::JsonPointer(_)) => Some(Kind::Json),
        Binding::Body(BodyField::FormField(_)) => Some(Kind::Form),
        _ => None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Form,
}

/// Checks and parses a body a route binds: 413 beyond the limit, 415 for a
/// compressed body or another media type, 400 for a body that does not
/// parse strictly (a BOM, invalid UTF-8, duplicate member names anywhere).
pub fn parse<'a>(
    headers: &HeaderMap,
    body: RequestBody<'a>,
    kind: Kind,
) -> Result<ParsedBody<'a>, (Reason, String)> {
    let bytes = match body {
        RequestBody::Complete(bytes) => bytes,
        RequestBody::TooLarge => {
            return Err((Reason::BodyTooLarge, "larger than max_body_bytes".into()))
        }
    };
    if list_items(headers, http::header::CONTENT_ENCODING)
        .any(|e| !e.eq_ignore_ascii_case(b"identity"))
    {
        let why = "a Content-Encoding other than identity";
        return Err((Reason::UnsupportedMediaType, why.into()));
    }
    let media_type = media_type(headers);
    let malformed = |why: &str| (Reason::InvalidRequest, why.to_string());
    match kind {
        Kind::Json => {
            if !media_type.as_deref().is_some_and(is_json_media_type) {
                let why = format!("Content-Type {media_type:?}, not application/json");
                return Err((Reason::UnsupportedMediaType, why));
            }
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                return Err(malformed("a byte order mark"));
            }
            strict_value(bytes)
                .map(ParsedBody::Json)
                .ok_or_else(|| malformed("not strict JSON (or duplicate member names)"))
        }
        Kind::Form => {
            if media_type.as_deref() != Some("application/x-www-form-urlencoded") {
                let why = format!("Content-Type {media_type:?}, not a form");
                return Err((Reason::UnsupportedMediaType, why));
            }
            if std::str::from_utf8(bytes).is_err() {
                return Err(malformed("not UTF-8"));
            }
            let pairs: Vec<_> = form_urlencoded::parse(bytes).collect();
            if pairs
                .iter()
                .any(|(n, v)| n.contains('\u{FFFD}') || v.contains('\u{FFFD}'))
            {
                return Err(malformed("a percent-escape that is not UTF-8"));
            }
            Ok(ParsedBody::Form(pairs))
        }
    }
}

/// The lowercased media type of the one `Content-Type`, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let text = value.to_str().ok()?;
    let essence = text.split(';').next().unwrap_or("").trim();
    Some(essence.to_ascii_lowercase())
}

fn is_json_media_type(media_type: &str) -> bool {
    media_type == "application/json"
        || media_type
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// The bound value at `field`: `Ok(None)` when absent, `Err` (400) when it is
/// given twice or is neither a string nor an integer.
pub fn lookup(body: &ParsedBody<'_>, field: &BodyField) -> Result<Option<Vec<u8>>, String> {
    match (body, field) {
        (ParsedBody::Json(document), BodyField::JsonPointer(pointer)) => {
            match resolve_pointer(document, pointer) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.as_bytes().to_vec())),
                Some(Json::Number(n)) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
                    Ok(Some(format!("{}", *n as i64).into_bytes()))
                }
                Some(_) => Err(format!("body {pointer} is neither a string nor an integer")),
            }
        }
        (ParsedBody::Form(pairs), BodyField::FormField(name)) => {
            let mut values = pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
            match (values.next(), values.next()) {
                (None, _) => Ok(None),
                (Some(value), None) => Ok(Some(value.as_bytes().to_vec())),
                _ => Err(format!("body field {name} is given more than once")),
            }
        }
        // Validation never mixes the kinds; fail closed regardless.
        _ => Err("the body is not of the bound kind".into()),
    }
}

/// RFC 6901: `""` is the whole document, `/a/0/b~1c` walks members (`~1`
/// is `/`, `~0` is `~`) and array indexes.
fn resolve_pointer<'j, 'a>(document: &'j Json<'a>, pointer: &str) -> Option<&'j Json<'a>> {
    if pointer.is_empty() {
        return Some(document);
    }
    let mut at = document;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match at {
            Json::Object(object) => object.get(&token)?,
            Json::Array(items) => {
                let canonical = token == "0" || !token.starts_with('0');
                let index: usize = token.parse().ok().filter(|_| canonical)?;
                items.get(index)?
            }
            _ => return None,
        };
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_str(content_type).unwrap());
        h
    }

    fn json(body: &str) -> Result<ParsedBody<'_>, (Reason, String)> {
        parse(
            &headers("application/json; charset=utf-8"),
            RequestBody::Complete(body.as_bytes()),
            Kind::Json,
        )
    }

    fn pointer(p: &str) -> BodyField {
        BodyField::JsonPointer(p.into())
    }

    #[test]
    fn json_pointers_read_strings_and_integers() {
        let body = json(r#"{"person":{"fnr":"17839116535"},"year":2025,"a/b":["x","y"]}"#).unwrap();
        let get = |p: &str| lookup(&body, &pointer(p));
        assert_eq!(get("/person/fnr"), Ok(Some(b"17839116535".to_vec())));
        assert_eq!(get("/year"), Ok(Some(b"2025".to_vec())));
        assert_eq!(get("/a~1b/1"), Ok(Some(b"y".to_vec())));
        assert_eq!(get("/a~1b/01"), Ok(None));
        assert_eq!(get("/missing"), Ok(None));
        assert!(get("/person").is_err(), "an object is no value");
        assert!(get("/a~1b").is_err(), "an array is no value");
        let float = json(r#"{"year":2025.5}"#).unwrap();
        assert!(lookup(&float, &pointer("/year")).is_err());
    }

    #[test]
    fn json_bodies_are_strict() {
        for bad in [
            r#"{"fnr":"1","fnr":"2"}"#,
            r#"{"a":{"x":1,"x":2},"fnr":"1"}"#,
            "\u{feff}{\"fnr\":\"1\"}",
            r#"{"fnr":"1"} trailing"#,
            "",
        ] {
            assert_eq!(json(bad).unwrap_err().0, Reason::InvalidRequest, "{bad:?}");
        }
        let invalid_utf8 = b"{\"fnr\":\"\xff\"}";
        let got = parse(
            &headers("application/json"),
            RequestBody::Complete(invalid_utf8),
            Kind::Json,
        );
        assert_eq!(got.unwrap_err().0, Reason::InvalidRequest);
    }

    #[test]
    fn media_type_encoding_and_size() {
        let body = RequestBody::Complete(br#"{"fnr":"1"}"#);
        assert!(parse(&headers("application/problem+json"), body, Kind::Json).is_ok());
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            let got = parse(&headers(other), body, Kind::Json).unwrap_err();
            assert_eq!(got.0, Reason::UnsupportedMediaType, "{other}");
        }
        let got = parse(&HeaderMap::new(), body, Kind::Json).unwrap_err();
        assert_eq!(got.0, Reason::UnsupportedMediaType);
        let mut gzip = headers("application/json");
        gzip.insert("content-encoding", HeaderValue::from_static("gzip"));
        assert_eq!(
            parse(&gzip, body, Kind::Json).unwrap_err().0,
            Reason::UnsupportedMediaType
        );
        let mut identity = headers("application/json");
        identity.insert("content-encoding", HeaderValue::from_static("identity"));
        assert!(parse(&identity, body, Kind::Json).is_ok());
        let too_large = parse(
            &headers("application/json"),
            RequestBody::TooLarge,
            Kind::Json,
        );
        assert_eq!(too_large.unwrap_err().0, Reason::BodyTooLarge);
    }

    #[test]
    fn form_fields_once_decoded() {
        let form = |body: &'static str| {
            parse(
                &headers("application/x-www-form-urlencoded"),
                RequestBody::Complete(body.as_bytes()),
                Kind::Form,
            )
        };
        let field = BodyField::FormField("fnr".into());
        let body = form("fnr=178%33911+6535&year=2025").unwrap();
        assert_eq!(lookup(&body, &field), Ok(Some(b"1783911 6535".to_vec())));
        assert!(lookup(&form("fnr=1&fnr=2").unwrap(), &field).is_err());
        assert_eq!(lookup(&form("other=1").unwrap(), &field), Ok(None));
        assert_eq!(form("fnr=%ff").unwrap_err().0, Reason::InvalidRequest);
        let json_type = parse(
            &headers("application/json"),
            RequestBody::Complete(b"fnr=1"),
            Kind::Form,
        );
        assert_eq!(json_type.unwrap_err().0, Reason::UnsupportedMediaType);
    }
}
