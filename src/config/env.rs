//! `${ENV_NAME}` in `gateway.yaml` values (SPEC section 13): a whole value or
//! part of one is replaced by the environment variable's value; an unset
//! variable is a config error naming the field path. `$${` writes a literal
//! `${`. Substitution works on parsed YAML strings, never on the text, so a
//! value from the environment cannot add keys or change the structure.

use serde_yaml::Value;

/// Replaces every `${NAME}` in the string values (not the keys) of `value`,
/// reading variables through `lookup`. Returns every problem as
/// `(field path, message)`.
pub fn substitute(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    walk(value, String::new(), lookup, &mut errors);
    errors
}

fn walk(
    value: &mut Value,
    path: String,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(text) if text.contains('$') => match expand(text, lookup) {
            Ok(expanded) => {
                let whole = text.starts_with("${") && text.find('}') == Some(text.len() - 1);
                // A whole `${THREADS}` may stand for a number or a boolean.
                let scalar = serde_yaml::from_str::<Value>(&expanded)
                    .ok()
                    .filter(|v| whole && matches!(v, Value::Number(_) | Value::Bool(_)));
                match scalar {
                    Some(scalar) => *value = scalar,
                    None => *text = expanded,
                }
            }
            Err(message) => errors.push((path, message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = match key {
                    Value::String(k) => k.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                walk(item, child, lookup, errors);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup, errors),
        _ => {}
    }
}

/// Expands one string; `$${` is a literal `${`.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!("`${{` without a closing `}}` in {text:?}"));
            };
            let name = &after[..end];
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not an environment variable name (letters, digits, `_`)"
                ));
            }
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(format!(
                        "environment variable {name} is not set (write `$${{` for a literal `${{`)"
                    ))
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("collector".into()),
            "PORT" => Some("4318".into()),
            "THREADS" => Some("2".into()),
            "EVIL" => Some("x\nroutes: []".into()),
            _ => None,
        }
    }

    #[test]
    fn whole_and_partial_values() {
        assert_eq!(expand("${HOST}", &env).unwrap(), "collector");
        assert_eq!(
            expand("http://${HOST}:${PORT}/v1", &env).unwrap(),
            "http://collector:4318/v1"
        );
        assert_eq!(
            expand("cost $5 and $${HOST}", &env).unwrap(),
            "cost $5 and ${HOST}"
        );
    }

    #[test]
    fn errors_name_every_path() {
        let mut v: Value = serde_yaml::from_str(
            "server:\n  listen: [\"${NOPE}\", \"${HOST}\"]\nissuers:\n  - jwks_uri: \"${1X}\"\n    issuer: \"${OPEN\"\n",
        )
        .unwrap();
        let errors = substitute(&mut v, &env);
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.listen[0]",
                "issuers[0].jwks_uri",
                "issuers[0].issuer"
            ]
        );
        assert!(errors[0].1.contains("NOPE is not set"), "{errors:?}");
        assert_eq!(v["server"]["listen"][1], "collector");
        let mut v: Value =
            serde_yaml::from_str("threads: ${THREADS}\nport: \"p${PORT}\"\n").unwrap();
        assert!(substitute(&mut v, &env).is_empty());
        assert_eq!(v["threads"], Value::Number(2.into()));
        assert_eq!(v["port"], "p4318");
    }

    #[test]
    fn a_value_cannot_change_the_structure() {
        let mut v: Value = serde_yaml::from_str("a: \"${EVIL}\"\n").unwrap();
        assert!(substitute(&mut v, &env).is_empty());
        assert_eq!(v["a"], "x\nroutes: []");
        assert!(v.get("routes").is_none());
    }
}
