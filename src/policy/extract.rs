//! Extraction (Envoy `jwt_authn`'s extractor): the bearer credential of
//! check 3, and the request values a consent rule binds, read as the most
//! lenient backend would read them.

use percent_encoding::percent_decode;

use crate::config::{Binding, ConsentRule};
use crate::error::Reason;
use crate::policy::body::lookup;
use crate::policy::consent::{Bound, BoundValues};
use crate::policy::RequestView;

/// Check 3. Returns the token bytes, or the reason with a short explanation.
pub(crate) fn extract_bearer<'r>(
    req: &RequestView<'r>,
) -> Result<&'r [u8], (Reason, &'static str)> {
    if lenient_query_names(req.query).any(|name| name == b"access-token") {
        return Err((Reason::InvalidTokenRequest, "access_token in the query"));
    }
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err((Reason::MissingToken, "no Authorization header"));
    };
    if values.next().is_some() {
        return Err((
            Reason::InvalidTokenRequest,
            "more than one Authorization header",
        ));
    }
    let value = value.as_bytes().trim_ascii_start();
    let scheme_end = value
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return Err((
            Reason::MissingToken,
            "the Authorization scheme is not Bearer",
        ));
    }
    let credentials = value[scheme_end..].trim_ascii();
    if credentials.is_empty() {
        return Err((Reason::InvalidTokenRequest, "Bearer without a token"));
    }
    if has_ascii_whitespace(credentials) {
        return Err((
            Reason::InvalidTokenRequest,
            "more than one credential after Bearer",
        ));
    }
    Ok(credentials)
}

/// Whether `bytes` holds an ASCII whitespace byte. A token is about 1-2 KB
/// and this runs on every request: a branch-free pass the compiler
/// vectorises first (no byte at or below a space means no whitespace), the
/// exact byte test only when that pass finds a candidate.
pub(crate) fn has_ascii_whitespace(bytes: &[u8]) -> bool {
    let candidates = bytes.iter().fold(0u8, |acc, &b| acc | u8::from(b <= b' '));
    candidates != 0 && bytes.iter().any(u8::is_ascii_whitespace)
}

/// Resolves every value the consent rule binds. `Err` names a value given
/// more than once.
pub(crate) fn resolve_bindings(
    rule: &ConsentRule,
    req: &RequestView<'_>,
) -> Result<BoundValues, String> {
    let subject = rule
        .subject
        .as_ref()
        .map(|binding| resolve(binding, req))
        .transpose()?;
    let metadata = rule
        .metadata_match
        .iter()
        .map(|(key, binding)| resolve(binding, req).map(|bound| (key.clone(), bound)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BoundValues { subject, metadata })
}

pub(crate) fn resolve(binding: &Binding, req: &RequestView<'_>) -> Result<Bound, String> {
    // `other_spelling`: the request also carries the name spelt another way
    // that some backend reads as this one; as ambiguous as a second value.
    if let Binding::Body(field) = binding {
        let Some(body) = req.body else {
            // The glue parses a bound body before deciding; fail closed.
            return Err("the body (not read)".into());
        };
        return Ok(match lookup(body, field)? {
            Some(value) => Bound::Value(value),
            None => Bound::Absent,
        });
    }
    let (values, other_spelling): (Vec<Vec<u8>>, bool) = match binding {
        Binding::Body(_) => (Vec::new(), false),
        Binding::PathParam(name) => (
            req.path_params
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| percent_decode(v.as_bytes()).collect())
                .collect(),
            false,
        ),
        Binding::Header(name) => {
            // CGI-style backends (WSGI, Rack, PHP) read `X_Person_Id` and
            // `x.person.id` as `X-Person-Id` (the folding of the
            // `X-Consent-*` namespace).
            let wanted = folded_name(name.as_bytes());
            (
                req.headers
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect(),
                req.headers.keys().any(|n| {
                    n.as_str() != name.as_str() && folded_name(n.as_str().as_bytes()) == wanted
                }),
            )
        }
        Binding::Query(name) => (
            query_pairs(req.query)
                .filter(|(n, _)| n.as_slice() == name.as_bytes())
                .map(|(_, v)| v)
                .collect(),
            lenient_query_names(req.query)
                .filter(|n| *n == folded_name(name.as_bytes()))
                .nth(1)
                .is_some(),
        ),
    };
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(Bound::Absent),
        (Some(value), None) if !other_spelling => Ok(Bound::Value(value)),
        // The message is built only on this (rare) path.
        _ => Err(match binding {
            Binding::PathParam(name) => format!("path parameter {name}"),
            Binding::Header(name) => format!("header {name}"),
            Binding::Query(name) => format!("query parameter {name}"),
            Binding::Body(_) => "the body".to_string(),
        }),
    }
}

/// A name as the most lenient backend reads it: lower case, and every byte
/// other than a-z and 0-9 read as `-`.
pub(crate) fn folded_name(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|b| match b.to_ascii_lowercase() {
            c @ (b'a'..=b'z' | b'0'..=b'9') => c,
            _ => b'-',
        })
        .collect()
}

/// The query's parameter names as the most lenient backend parser reads
/// them, folded (`folded_name`): `;` separates like `&` (Rack, older
/// Python), `+` is a space and leading or trailing spaces are dropped (PHP),
/// `fnr[]` and `fnr[x]` are `fnr` (PHP, Rack), case does not matter
/// (ASP.NET Core).
pub(crate) fn lenient_query_names(query: Option<&str>) -> impl Iterator<Item = Vec<u8>> + '_ {
    query
        .unwrap_or_default()
        .split(['&', ';'])
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let decoded: Vec<u8> = percent_decode(name.replace('+', " ").as_bytes()).collect();
            let base = decoded.split(|b| *b == b'[').next().unwrap_or_default();
            folded_name(base.trim_ascii())
        })
}

/// The query's `name=value` pairs, both percent-decoded (`+` stays `+`).
pub(crate) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(name.as_bytes()).collect(),
                percent_decode(value.as_bytes()).collect(),
            )
        })
}
