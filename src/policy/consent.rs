//! Consent matching (checks 15-21): one `urn:altinn:consent` element, and one
//! right of it, must cover the request on its own: recipient, validity,
//! resource and actions, data subject, metadata. Parts of different elements
//! or rights are never combined. Pure.

use crate::config::ConsentRule;
use crate::error::Reason;
use crate::policy::claims::{
    ConsentElement, ConsentRight, ORGANIZATION_URN_PREFIX, PERSON_URN_PREFIX, RESOURCE_TYPE,
};
use crate::policy::trace::Trace;
use crate::policy::{CheckOutcome, SubjectType};
use crate::time::unix_rfc3339;

/// A request value bound by `subject` or `metadata.match`, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// The request does not carry it: never matches.
    Absent,
    Value(Vec<u8>),
}

/// The request values a consent route binds, resolved once per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundValues {
    /// `None` when the route binds no subject.
    pub subject: Option<Bound>,
    /// One per `metadata.match` key (lowercased), in config order.
    pub metadata: Vec<(String, Bound)>,
}

/// The element and right that cover the request.
#[derive(Debug)]
pub struct ConsentMatch<'e> {
    pub element: &'e ConsentElement,
    pub right: &'e ConsentRight,
    /// The configured resource that matched.
    pub resource: &'e str,
    pub subject_type: SubjectType,
    /// The identifier part of `from`.
    pub subject: &'e str,
    /// The recipient as `0192:<orgnr>`.
    pub to: String,
}

/// Why no element covers the request, and which element got furthest.
#[derive(Debug)]
pub struct ConsentDenial<'e> {
    pub reason: Reason,
    pub element: Option<&'e ConsentElement>,
}

/// Time and parties the element checks compare against.
#[derive(Debug, Clone, Copy)]
pub struct ConsentInputs<'a> {
    pub consumer: &'a str,
    pub now: f64,
    pub leeway: f64,
}

/// Checks 15-21 over the token's consent elements.
pub(crate) fn evaluate<'e>(
    elements: &'e [ConsentElement],
    rule: &ConsentRule,
    bound: &BoundValues,
    inputs: ConsentInputs<'_>,
    trace: &mut Trace<'_>,
) -> Result<ConsentMatch<'e>, ConsentDenial<'e>> {
    if elements.is_empty() {
        trace.record(15, "consent_present", false, || {
            format!("no element of type {}", crate::policy::claims::CONSENT_TYPE)
        });
        return Err(ConsentDenial {
            reason: Reason::ConsentMissing,
            element: None,
        });
    }
    trace.record(15, "consent_present", true, || {
        format!("{} consent element(s)", elements.len())
    });

    let mut furthest: Option<(u8, Reason, &ConsentElement)> = None;
    let mut element_lines: Vec<CheckOutcome> = Vec::new();
    for element in elements {
        let mut lines = trace.is_enabled().then(Vec::new);
        let outcome = evaluate_element(element, rule, bound, inputs, &mut lines);
        if let Some(lines) = lines {
            element_lines.extend(lines);
        }
        match outcome {
            Ok(found) => {
                trace.record(16, "consent_element", true, || {
                    format!("element #{} satisfies checks 17-21", element.position)
                });
                trace.extend(element_lines);
                return Ok(found);
            }
            Err((stage, reason)) => {
                if furthest.is_none_or(|(best, _, _)| stage > best) {
                    furthest = Some((stage, reason, element));
                }
            }
        }
    }
    let (stage, reason, element) = match furthest {
        Some(f) => f,
        None => (16, Reason::ConsentMissing, &elements[0]),
    };
    trace.record(16, "consent_element", false, || {
        format!(
            "no element satisfies checks 17-21; element #{} got furthest, failing check {stage}",
            element.position
        )
    });
    trace.extend(element_lines);
    Err(ConsentDenial {
        reason,
        element: Some(element),
    })
}

type ElementFailure = (u8, Reason);

fn push(
    lines: &mut Option<Vec<CheckOutcome>>,
    element: &ConsentElement,
    number: u8,
    name: &'static str,
    passed: bool,
    detail: impl FnOnce() -> String,
) {
    if let Some(lines) = lines {
        lines.push(CheckOutcome {
            number,
            name,
            passed,
            detail: format!("element #{}: {}", element.position, detail()),
        });
    }
}

fn evaluate_element<'e>(
    element: &'e ConsentElement,
    rule: &ConsentRule,
    bound: &BoundValues,
    inputs: ConsentInputs<'_>,
    lines: &mut Option<Vec<CheckOutcome>>,
) -> Result<ConsentMatch<'e>, ElementFailure> {
    // 17: the recipient is the token's consumer.
    let to = element.to.as_iso6523();
    let recipient_ok = to.as_deref() == Some(inputs.consumer);
    push(
        lines,
        element,
        17,
        "consent_recipient",
        recipient_ok,
        || {
            format!(
                "to {} vs consumer {}",
                to.as_deref().unwrap_or("(not an organisation)"),
                inputs.consumer
            )
        },
    );
    let Some(to) = to.filter(|_| recipient_ok) else {
        return Err((17, Reason::ConsentRecipientMismatch));
    };

    // 18: the validity window, with the issuer's leeway.
    let (now, leeway) = (inputs.now, inputs.leeway);
    let validity = if element.consented_at > now + leeway {
        Err(Reason::ConsentNotYetValid)
    } else if now >= element.valid_to_at + leeway {
        Err(Reason::ConsentExpired)
    } else {
        Ok(())
    };
    push(
        lines,
        element,
        18,
        "consent_validity",
        validity.is_ok(),
        || {
            format!(
                "consented {}, validTo {}, now {}",
                element.consented,
                element.valid_to,
                unix_rfc3339(now)
            )
        },
    );
    validity.map_err(|reason| (18, reason))?;

    // 19: rights naming a configured resource with every configured action.
    let candidates: Vec<(&ConsentRight, &str)> = element
        .rights
        .iter()
        .filter_map(|right| covered_resource(right, rule).map(|r| (right, r)))
        .collect();
    push(
        lines,
        element,
        19,
        "consent_resource",
        !candidates.is_empty(),
        || {
            format!(
                "{} right(s) list one of {:?} with actions {:?}",
                candidates.len(),
                rule.resources,
                rule.actions
            )
        },
    );
    if candidates.is_empty() {
        return Err((19, Reason::ConsentResourceMismatch));
    }

    // 20: the data subject. The outcome is plain data; its description is
    // only written when `explain` traces.
    let subject = parse_subject(&element.from);
    let verdict = match subject {
        None => SubjectVerdict::NotAUrn,
        Some((kind, _)) if !type_allowed(rule, kind) => SubjectVerdict::TypeNotAllowed,
        Some(_) => match &bound.subject {
            None => SubjectVerdict::NotBound,
            Some(Bound::Absent) => SubjectVerdict::Absent,
            Some(Bound::Value(value)) if subject.is_some_and(|(_, id)| value == id.as_bytes()) => {
                SubjectVerdict::Equal
            }
            Some(Bound::Value(_)) => SubjectVerdict::Differs,
        },
    };
    let subject_passed = matches!(verdict, SubjectVerdict::NotBound | SubjectVerdict::Equal);
    push(
        lines,
        element,
        20,
        "consent_subject",
        subject_passed,
        || {
            let (kind, id) = subject.map_or(("", ""), |(kind, id)| (kind.as_str(), id));
            match (verdict, &bound.subject) {
                (SubjectVerdict::NotAUrn, _) => "from is not a person or organisation URN".into(),
                (SubjectVerdict::TypeNotAllowed, _) => format!("subject type {kind} not allowed"),
                (SubjectVerdict::NotBound, _) => format!("{kind} {} (not bound)", mask(id)),
                (SubjectVerdict::Absent, _) => "the request carries no subject value".into(),
                (SubjectVerdict::Equal, _) => {
                    format!("{kind} {} equals the request's value", mask(id))
                }
                (SubjectVerdict::Differs, Some(Bound::Value(value))) => format!(
                    "{kind} {} differs from the request's {}",
                    mask(id),
                    mask(&String::from_utf8_lossy(value))
                ),
                (SubjectVerdict::Differs, _) => format!("{kind} {} differs", mask(id)),
            }
        },
    );
    let Some((subject_type, subject)) = subject.filter(|_| subject_passed) else {
        return Err((20, Reason::ConsentSubjectMismatch));
    };

    // 21: the metadata of that same right.
    for (index, (right, resource)) in candidates.iter().enumerate() {
        let verdict = metadata_verdict(right, rule, bound);
        push(
            lines,
            element,
            21,
            "consent_metadata",
            verdict.is_ok(),
            || {
                let what = match &verdict {
                    Ok(()) => "covers the request".to_string(),
                    Err(why) => why.clone(),
                };
                format!("candidate right {} ({resource}): {what}", index + 1)
            },
        );
        if verdict.is_ok() {
            return Ok(ConsentMatch {
                element,
                right,
                resource,
                subject_type,
                subject,
                to,
            });
        }
    }
    Err((21, Reason::ConsentMetadataMismatch))
}

/// The first configured resource this right lists (as `urn:altinn:resource`),
/// when the right also lists every configured action.
fn covered_resource<'e>(right: &'e ConsentRight, rule: &ConsentRule) -> Option<&'e str> {
    if !rule.actions.iter().all(|a| right.actions.contains(a)) {
        return None;
    }
    right
        .resources
        .iter()
        .find(|(kind, value)| kind == RESOURCE_TYPE && rule.resources.contains(value))
        .map(|(_, value)| value.as_str())
}

fn metadata_verdict(
    right: &ConsentRight,
    rule: &ConsentRule,
    bound: &BoundValues,
) -> Result<(), String> {
    let lookup = |key: &str| {
        right
            .metadata
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| right.metadata[i].1.as_str())
    };
    for key in &rule.metadata_required {
        if lookup(key).is_none() {
            return Err(format!("required key {key} absent"));
        }
    }
    for (key, request_value) in &bound.metadata {
        match (lookup(key), request_value) {
            (None, _) => return Err(format!("matched key {key} absent")),
            (Some(_), Bound::Absent) => {
                return Err(format!("the request carries no value for {key}"))
            }
            (Some(value), Bound::Value(wanted)) if value.as_bytes() == wanted.as_slice() => {}
            (Some(_), Bound::Value(_)) => {
                return Err(format!("{key} differs from the request's value"))
            }
        }
    }
    Ok(())
}

/// How check 20 ended for one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubjectVerdict {
    NotAUrn,
    TypeNotAllowed,
    /// The route binds no subject: any well-formed one of an allowed type.
    NotBound,
    Absent,
    Equal,
    Differs,
}

fn type_allowed(rule: &ConsentRule, kind: SubjectType) -> bool {
    match kind {
        SubjectType::Person => rule.subject_types.person,
        SubjectType::Organization => rule.subject_types.organization,
    }
}

/// Splits a `from` URN into the subject's type and identifier, when it is a
/// well-formed person (11 digits) or organisation (9 digits) URN.
pub fn parse_subject(from: &str) -> Option<(SubjectType, &str)> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(id) = from.strip_prefix(PERSON_URN_PREFIX) {
        return digits(id, 11).then_some((SubjectType::Person, id));
    }
    if let Some(id) = from.strip_prefix(ORGANIZATION_URN_PREFIX) {
        return digits(id, 9).then_some((SubjectType::Organization, id));
    }
    None
}

/// Masks a possible national identity number for `explain` output: the
/// first six characters stay, the rest become `*` (`259229*****`).
/// Organisation numbers (9 digits) are not personal data and stay in clear.
pub fn mask(value: &str) -> String {
    if value.len() == 9 && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.to_string();
    }
    let kept: String = value.chars().take(6).collect();
    let hidden = value.chars().count().saturating_sub(6).min(32);
    format!("{kept}{}", "*".repeat(hidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_urns() {
        assert_eq!(
            parse_subject("urn:altinn:person:identifier-no:17839116535"),
            Some((SubjectType::Person, "17839116535"))
        );
        assert_eq!(
            parse_subject("urn:altinn:organization:identifier-no:302685991"),
            Some((SubjectType::Organization, "302685991"))
        );
        for bad in [
            "urn:altinn:person:identifier-no:1783911653",
            "urn:altinn:person:identifier-no:178391165351",
            "urn:altinn:person:identifier-no:1783911653a",
            "urn:altinn:organization:identifier-no:30268599",
            "urn:altinn:person:identifier-no:302685991",
            "URN:ALTINN:PERSON:IDENTIFIER-NO:17839116535",
            "17839116535",
        ] {
            assert_eq!(parse_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn masking() {
        assert_eq!(mask("25922900000"), "259229*****");
        assert_eq!(mask("302685991"), "302685991");
        assert_eq!(mask("123"), "123");
    }

    #[test]
    fn time_formatting() {
        assert_eq!(unix_rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(unix_rfc3339(1.5), "1970-01-01T00:00:01.500Z");
    }
}
