//! The file's shape, section by section: when the whole file does not
//! deserialize (an unknown key, a wrong type, a bad duration), serde stops
//! at the first error; this reads each top-level section, and each list
//! item of `issuers`, `upstreams` and `routes`, on its own, so that every
//! broken item is reported in one run, and adds a "did you mean" hint to
//! unknown keys and values. Pure.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_yaml::Value;

use super::raw::{
    RawAltinn, RawAudit, RawIssuer, RawRoute, RawServer, RawService, RawState, RawTracing,
    RawUpstream,
};

/// The top level alone: its keys and the required `routes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TopLevel {
    #[serde(default)]
    server: IgnoredAny,
    #[serde(default)]
    issuers: IgnoredAny,
    #[serde(default)]
    upstreams: IgnoredAny,
    routes: IgnoredAny,
    #[serde(default)]
    audit: IgnoredAny,
    #[serde(default)]
    state: IgnoredAny,
    #[serde(default)]
    service: IgnoredAny,
    #[serde(default)]
    altinn: IgnoredAny,
    #[serde(default)]
    tracing: IgnoredAny,
}

/// Every shape error of `value` as (field path, message): the top level's
/// first, then one per broken section or list item, in file order.
pub fn errors(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    check::<TopLevel>(&mut out, "", value);
    let Value::Mapping(map) = value else {
        return out;
    };
    for (key, section) in map {
        let Some(key) = key.as_str() else { continue };
        match key {
            "server" => check::<RawServer>(&mut out, key, section),
            "audit" => check::<RawAudit>(&mut out, key, section),
            "state" => check::<RawState>(&mut out, key, section),
            "issuers" => list::<RawIssuer>(&mut out, key, section),
            "upstreams" => list::<RawUpstream>(&mut out, key, section),
            "routes" => list::<RawRoute>(&mut out, key, section),
            _ if section.is_null() => {}
            "service" => check::<RawService>(&mut out, key, section),
            "altinn" => check::<RawAltinn>(&mut out, key, section),
            "tracing" => check::<RawTracing>(&mut out, key, section),
            _ => {}
        }
    }
    out
}

/// A list section: each item on its own (the list's own type when it is
/// not a list).
fn list<T: DeserializeOwned>(out: &mut Vec<(String, String)>, key: &str, section: &Value) {
    match section {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                check::<T>(out, &format!("{key}[{i}]"), item);
            }
        }
        _ => check::<Vec<T>>(out, key, section),
    }
}

/// Deserializes `value` as `T`; an error is recorded under `prefix`.
fn check<T: DeserializeOwned>(out: &mut Vec<(String, String)>, prefix: &str, value: &Value) {
    let Err(error) = serde_path_to_error::deserialize::<_, T>(value.clone()) else {
        return;
    };
    let inner = error.path().to_string();
    let path = match (prefix, inner.as_str()) {
        (p, ".") => p.to_string(),
        ("", rest) => rest.to_string(),
        (p, rest) if rest.starts_with('[') => format!("{p}{rest}"),
        (p, rest) => format!("{p}.{rest}"),
    };
    let message = super::yaml_message(&error.into_inner().to_string(), &inner);
    out.push((path, message));
}

/// The top-level item a path lies in (`routes[2]`, `server`): one error
/// each is reported.
pub fn item_of(path: &str) -> &str {
    let end = path.find('.').unwrap_or(path.len());
    let head = &path[..end];
    match head.find(']') {
        Some(close) => &head[..=close],
        None => head,
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown
/// variant"), with the closest expected name as a hint when one is close;
/// one value where a list belongs, with the list to write.
pub fn with_hint(message: String) -> String {
    if let Some(value) = message
        .strip_prefix("invalid type: string ")
        .and_then(|rest| rest.strip_suffix(", expected a sequence"))
    {
        return format!("{message}: write a list, [{value}]");
    }
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message;
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return message;
    };
    let candidates = expected.split('`').skip(1).step_by(2);
    let best = candidates
        .map(|c| (strsim::damerau_levenshtein(given, c), c))
        .filter(|(distance, c)| *distance > 0 && *distance <= c.len() / 3)
        .min_by_key(|(distance, _)| *distance);
    match best {
        Some((_, name)) => format!("{message}; did you mean `{name}`?"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> Vec<(String, String)> {
        errors(&serde_yaml::from_str(text).unwrap())
    }

    #[test]
    fn every_broken_item_is_reported() {
        let got = shape(
            "servr: {}\nissuers:\n  - name: a\n    leeway: 30\n  - name: b\n    issuer: x\n    jwks_uri: y\n  - name: c\n    colour: red\nupstreams: 7\nroutes:\n  - name: r\n    path: /x\n    upstrem: u\ntracing:\n  otlp_endpoint: [1]\n",
        );
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "servr",
                "issuers[0].leeway",
                "issuers[2].colour",
                "upstreams",
                "routes[0].upstrem",
                "tracing.otlp_endpoint",
            ],
            "{got:#?}"
        );
        assert!(got[1].1.contains("needs a unit"), "{got:#?}");
    }

    #[test]
    fn a_well_shaped_file_has_no_shape_errors() {
        assert!(shape("routes: []\nservice: null\n").is_empty());
        assert_eq!(shape("server: {}\n")[0].1, "missing field `routes`");
    }

    #[test]
    fn hints_name_the_closest_key_only_when_close() {
        let hinted = with_hint(
            "unknown field `strip_authorisation`, expected `strip_authorization` or `preserve_host`"
                .to_string(),
        );
        assert!(
            hinted.ends_with("did you mean `strip_authorization`?"),
            "{hinted}"
        );
        let far = with_hint("unknown field `colour`, expected `name` or `issuer`".to_string());
        assert!(!far.contains("did you mean"), "{far}");
        let variant = with_hint(
            "unknown variant `tokn`, expected one of `consent`, `token`, `none`".to_string(),
        );
        assert!(variant.ends_with("did you mean `token`?"), "{variant}");
        let list =
            with_hint("invalid type: string \"127.0.0.1:8081\", expected a sequence".to_string());
        assert!(
            list.ends_with("write a list, [\"127.0.0.1:8081\"]"),
            "{list}"
        );
        assert_eq!(item_of("routes[2].consent.subject"), "routes[2]");
        assert_eq!(item_of("server.listen[0]"), "server");
        assert_eq!(item_of("routes"), "routes");
    }
}
