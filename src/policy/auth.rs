//! The authenticator: checks 3-21 of SPEC section 4 in their exact order,
//! from bearer extraction through signature, claims, time, scopes, delegation
//! and access list to the consent. The first failing check decides. Pure: the
//! time comes from `AuthContext::now`, keys from a `KeySource`.

use crate::config::{AuthMode, ConsentRule, Issuer, SyncedVerdict};
use crate::error::Reason;
use crate::policy::claims::{ConsentElement, TokenClaims};
use crate::policy::consent::{self, parse_subject, BoundValues, ConsentInputs, ConsentMatch};
use crate::policy::extract::{extract_bearer, resolve_bindings};
pub(crate) use crate::policy::trace::Trace;
use crate::policy::verify::{verify_token, Signature};
use crate::policy::{
    AuthContext, Authorized, CheckOutcome, ConsentFacts, Denied, DeniedFacts, RequestView,
    TokenFacts,
};
use crate::time::unix_rfc3339;

/// Checks 3-21 for one request on one route (`auth: none` skips them all,
/// `auth: token` stops after 14). On `Denied` with `refetch` set, the caller
/// may refetch that issuer's JWKS and call again. When `trace` is `Some`, one
/// `CheckOutcome` is pushed per check evaluated (for `explain`).
pub fn authorize(
    ctx: &AuthContext<'_>,
    req: &RequestView<'_>,
    trace: Option<&mut Vec<CheckOutcome>>,
) -> Result<Authorized, Denied> {
    run(ctx, req, Signature::Verify, &mut Trace::new(trace))
}

/// Like [`authorize`] but skips checks 7-9 (keys and signature): for
/// `explain --no-verify` only, never on the request path. The token cache is
/// neither read nor written.
pub fn authorize_without_signature(
    ctx: &AuthContext<'_>,
    req: &RequestView<'_>,
    trace: Option<&mut Vec<CheckOutcome>>,
) -> Result<Authorized, Denied> {
    run(ctx, req, Signature::Skip, &mut Trace::new(trace))
}

/// Checks 3-21 as `policy::decide` runs them, recording
/// into its trace; `verify_signature: false` is [`authorize_without_signature`].
pub(crate) fn check_token(
    ctx: &AuthContext<'_>,
    req: &RequestView<'_>,
    verify_signature: bool,
    trace: &mut Trace<'_>,
) -> Result<Authorized, Denied> {
    let signature = if verify_signature {
        Signature::Verify
    } else {
        Signature::Skip
    };
    run(ctx, req, signature, trace)
}

fn deny(reason: Reason) -> Denied {
    Denied::new(reason)
}

fn run(
    ctx: &AuthContext<'_>,
    req: &RequestView<'_>,
    signature: Signature,
    trace: &mut Trace<'_>,
) -> Result<Authorized, Denied> {
    let consent_rule: Option<&ConsentRule> = match ctx.route.mode {
        AuthMode::None => return Ok(Authorized::default()),
        AuthMode::Token => None,
        AuthMode::Consent => match ctx.route.consent.as_ref() {
            Some(rule) => Some(rule),
            // Validation guarantees a consent rule; fail closed regardless.
            None => {
                trace.record(15, "consent_present", false, || {
                    "the route has no consent rule".into()
                });
                return Err(deny(Reason::ConsentMissing));
            }
        },
    };

    // Bound request values: a value given twice makes the request ambiguous
    // (400) whatever the token says, so this is decided first.
    let bound = match consent_rule {
        Some(rule) => resolve_bindings(rule, req).map_err(|name| {
            trace.record(0, "bound_values", false, || {
                format!("{name} is given more than once")
            });
            deny(Reason::InvalidRequest)
        })?,
        None => BoundValues::default(),
    };

    // 3: exactly one bearer credential.
    let token = match extract_bearer(req) {
        Ok(token) => {
            trace.record(3, "bearer_token", true, || {
                format!("one Bearer credential of {} bytes", token.len())
            });
            token
        }
        Err((reason, why)) => {
            trace.record(3, "bearer_token", false, || why.to_string());
            return Err(deny(reason));
        }
    };

    // 4-9: a compact JWS of an allowed issuer and algorithm, signed by one
    // of its keys (or these very bytes verified earlier).
    let (parsed, issuer) = verify_token(ctx, token, signature, trace)?;
    let claims = &parsed.claims;

    // From here on the token is genuine: denials carry its facts.
    let consent_elements = match (consent_rule, claims.consent.as_ref()) {
        (Some(_), Ok(elements)) => elements.as_slice(),
        _ => &[],
    };
    let facts_of = |claims: &TokenClaims, element: Option<&ConsentElement>| DeniedFacts {
        consumer: Some(claims.consumer.clone()),
        subject: element
            .and_then(|e| parse_subject(&e.from))
            .map(|(_, id)| id.to_string()),
        consent_id: element.map(|e| e.id.clone()),
    };

    // 10: claims present, well-typed and safe to forward.
    let needs_iat = issuer.max_token_lifetime.is_some();
    let missing: Vec<&str> = [
        (!claims.has_exp).then_some("exp"),
        (!claims.has_consumer).then_some("consumer"),
        (needs_iat && !claims.has_iat).then_some("iat"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        trace.record(10, "claims", false, || {
            format!("absent: {}", missing.join(", "))
        });
        let mut denied = deny(Reason::MissingClaim);
        if let Ok(c) = claims.token.as_ref() {
            denied.facts = facts_of(c, None);
        }
        return Err(denied);
    }
    let token_claims = match claims.token.as_ref() {
        Ok(c) => c,
        Err(e) => {
            trace.record(10, "claims", false, || e.0.clone());
            return Err(deny(Reason::MalformedToken));
        }
    };
    if consent_rule.is_some() {
        if let Err(e) = claims.consent.as_ref() {
            trace.record(10, "claims", false, || e.0.clone());
            let mut denied = deny(Reason::MalformedToken);
            denied.facts = facts_of(token_claims, None);
            return Err(denied);
        }
    }
    trace.record(10, "claims", true, || {
        format!("consumer {}, well-typed", token_claims.consumer)
    });
    let token_denial = |reason: Reason| {
        let mut denied = deny(reason);
        denied.facts = facts_of(token_claims, consent_elements.first());
        denied
    };

    // 11: time and audience.
    if let Err((reason, why)) = check_time(token_claims, issuer, ctx.now) {
        trace.record(11, "time_and_audience", false, || why);
        return Err(token_denial(reason));
    }
    trace.record(11, "time_and_audience", true, || {
        format!(
            "exp {} with leeway {}s, now {}",
            unix_rfc3339(token_claims.exp),
            issuer.leeway.as_secs_f64(),
            unix_rfc3339(ctx.now)
        )
    });

    // 12: scopes.
    let rule = &ctx.route.scopes;
    let granted: Vec<&str> = token_claims
        .scope
        .as_deref()
        .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let scopes_ok = rule.all.iter().all(|s| granted.contains(&s.as_str()))
        && (rule.any.is_empty() || rule.any.iter().any(|s| granted.contains(&s.as_str())));
    trace.record(12, "scopes", scopes_ok, || {
        format!(
            "granted {granted:?}; all of {:?}, any of {:?}",
            rule.all, rule.any
        )
    });
    if !scopes_ok {
        return Err(token_denial(Reason::InsufficientScope));
    }

    // 13: delegation.
    if let Some(supplier) = token_claims.supplier.as_deref() {
        let delegation = &ctx.route.delegation;
        let listed = delegation
            .suppliers
            .as_ref()
            .is_none_or(|suppliers| suppliers.contains(supplier));
        let ok = delegation.allow && listed;
        trace.record(13, "delegation", ok, || {
            if !delegation.allow {
                format!("supplier {supplier}: delegation not allowed")
            } else if listed {
                format!("supplier {supplier} allowed")
            } else {
                format!("supplier {supplier} not listed")
            }
        });
        if !ok {
            return Err(token_denial(Reason::SupplierNotAllowed));
        }
    } else {
        trace.record(13, "delegation", true, || "no supplier".into());
    }

    // 14: the consumer access list.
    let consumer = token_claims.consumer.as_str();
    // The members synced from Altinn join `allow` and `file` (SPEC section 13).
    let synced = ctx
        .route
        .altinn
        .as_ref()
        .map(|s| s.check(consumer, ctx.now));
    let consumer_ok = ctx
        .route
        .consumers
        .as_ref()
        .is_none_or(|list| list.contains(consumer) || synced == Some(SyncedVerdict::Listed));
    let unavailable = !consumer_ok && synced == Some(SyncedVerdict::Unavailable);
    trace.record(14, "consumer", consumer_ok, || match &ctx.route.consumers {
        None => format!("consumer {consumer} (no access list)"),
        Some(_) if consumer_ok => format!("consumer {consumer} is on the access list"),
        Some(_) if unavailable => format!(
            "consumer {consumer} is on no usable list; an Altinn access list is unavailable"
        ),
        Some(_) => format!("consumer {consumer} is not on the access list"),
    });
    if unavailable {
        return Err(token_denial(Reason::AccessListUnavailable));
    }
    if !consumer_ok {
        return Err(token_denial(Reason::ConsumerNotAllowed));
    }

    let token_facts = TokenFacts {
        issuer: issuer.name.clone(),
        consumer: token_claims.consumer.clone(),
        supplier: token_claims.supplier.clone(),
        client_id: token_claims.client_id.clone(),
        scope: token_claims.scope.clone(),
        jti: token_claims.jti.clone(),
    };
    let Some(rule) = consent_rule else {
        return Ok(parsed.forwarded.attach(Authorized {
            token: Some(token_facts),
            consent: None,
            headers: Default::default(),
        }));
    };

    // 15-21: the consent.
    let inputs = ConsentInputs {
        consumer,
        now: ctx.now,
        leeway: issuer.leeway.as_secs_f64(),
    };
    match consent::evaluate(consent_elements, rule, &bound, inputs, trace) {
        Ok(found) => Ok(parsed.forwarded.attach(Authorized {
            token: Some(token_facts),
            consent: Some(consent_facts(&found)),
            headers: Default::default(),
        })),
        Err(denial) => {
            let mut denied = deny(denial.reason);
            denied.facts = facts_of(token_claims, denial.element);
            Err(denied)
        }
    }
}

fn consent_facts(found: &ConsentMatch<'_>) -> ConsentFacts {
    ConsentFacts {
        id: found.element.id.clone(),
        from: found.element.from.clone(),
        subject_type: found.subject_type,
        subject: found.subject.to_string(),
        to: found.to.clone(),
        consented: found.element.consented.clone(),
        valid_to: found.element.valid_to.clone(),
        resource: found.resource.to_string(),
        metadata: found.right.metadata.clone(),
    }
}

/// Check 11, exact at the boundaries: `exp == now - L` is expired.
fn check_time(claims: &TokenClaims, issuer: &Issuer, now: f64) -> Result<(), (Reason, String)> {
    let leeway = issuer.leeway.as_secs_f64();
    if now >= claims.exp + leeway {
        return Err((
            Reason::TokenExpired,
            format!(
                "exp {} + leeway {leeway}s <= now {}",
                unix_rfc3339(claims.exp),
                unix_rfc3339(now)
            ),
        ));
    }
    if let Some(nbf) = claims.nbf.filter(|nbf| *nbf > now + leeway) {
        return Err((
            Reason::TokenNotYetValid,
            format!("nbf {} is in the future", unix_rfc3339(nbf)),
        ));
    }
    if let Some(iat) = claims.iat.filter(|iat| *iat > now + leeway) {
        return Err((
            Reason::TokenNotYetValid,
            format!("iat {} is in the future", unix_rfc3339(iat)),
        ));
    }
    if let (Some(max), Some(iat)) = (issuer.max_token_lifetime, claims.iat) {
        let lifetime = claims.exp - iat;
        if lifetime > max.as_secs_f64() {
            return Err((
                Reason::TokenLifetimeTooLong,
                format!("exp - iat = {lifetime}s > {}s", max.as_secs_f64()),
            ));
        }
    }
    if !issuer.audiences.is_empty() {
        let matches = claims
            .aud
            .as_ref()
            .is_some_and(|aud| aud.iter().any(|a| issuer.audiences.contains(a)));
        if !matches {
            return Err((
                Reason::AudienceMismatch,
                format!("aud {:?} holds none of {:?}", claims.aud, issuer.audiences),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use http::{HeaderMap, HeaderValue};
    use serde_json::{json, Value};

    use super::*;
    use crate::config::{Binding, DelegationRule, RouteAuth, ScopeRule, SubjectTypes};
    use crate::dev_issuer::DevIssuer;
    use crate::keys::Alg;
    use crate::keys::KeySet;
    use crate::metrics::Metrics;
    use crate::policy::token::ParsedToken;
    use crate::policy::{KeySource, SubjectType, TokenCache};
    use std::sync::Arc;

    /// 2026-03-02T08:16:40Z: inside the example consent's window.
    const NOW: f64 = 1_772_439_400.0;
    const LEEWAY: f64 = 30.0;
    const TEST_ISS: &str = "https://test.maskinporten.no/";
    const PROD_ISS: &str = "https://maskinporten.no/";
    const FNR: &str = "17839116535";
    const CONSUMER: &str = "0192:310497460";
    const SUPPLIER: &str = "0192:303137211";

    fn issuer() -> &'static DevIssuer {
        static KEY: OnceLock<DevIssuer> = OnceLock::new();
        KEY.get_or_init(|| DevIssuer::generate("mp-1").expect("RSA key"))
    }

    /// A different key under the same kid: what an attacker would sign with.
    fn attacker() -> &'static DevIssuer {
        static KEY: OnceLock<DevIssuer> = OnceLock::new();
        KEY.get_or_init(|| DevIssuer::generate("mp-1").expect("RSA key"))
    }

    fn key_set(dev: &DevIssuer) -> Arc<KeySet> {
        Arc::new(KeySet::parse(dev.jwks_json().as_bytes(), &[Alg::RS256], None).unwrap())
    }

    /// A `KeySource` over a vector, swappable mid-test (key rotation).
    struct VecKeys(Mutex<Vec<Option<Arc<KeySet>>>>);

    impl VecKeys {
        fn set(&self, keys: Vec<Option<Arc<KeySet>>>) {
            *self.0.lock().unwrap() = keys;
        }
    }

    impl KeySource for VecKeys {
        fn keys(&self, issuer: usize) -> Option<Arc<KeySet>> {
            self.0.lock().unwrap().get(issuer).cloned().flatten()
        }
    }

    fn issuer_config(name: &str, iss: &str) -> Issuer {
        Issuer::with_defaults(name, iss, "http://127.0.0.1/jwk")
    }

    fn person_rule() -> ConsentRule {
        ConsentRule {
            resources: vec!["demo-samtykke-inntekt".into()],
            actions: vec!["consent".into()],
            subject: Some(Binding::PathParam("fnr".into())),
            subject_types: SubjectTypes {
                person: true,
                organization: true,
            },
            metadata_required: vec!["fraogmed".into()],
            metadata_match: vec![("tilogmed".into(), Binding::Query("tilogmed".into()))],
        }
    }

    struct Setup {
        route: RouteAuth,
        issuers: Vec<Issuer>,
        keys: VecKeys,
        max_token_bytes: usize,
        now: f64,
        cache: Option<TokenCache>,
        metrics: Metrics,
    }

    impl Setup {
        fn consent(rule: ConsentRule) -> Setup {
            let keys = key_set(issuer());
            Setup {
                route: RouteAuth {
                    mode: AuthMode::Consent,
                    issuers: vec![0, 1],
                    scopes: ScopeRule {
                        all: vec!["demo:inntekt.read".into()],
                        any: vec![],
                    },
                    delegation: DelegationRule::default(),
                    consumers: None,
                    altinn: None,
                    consent: Some(rule),
                },
                issuers: vec![
                    issuer_config("maskinporten-test", TEST_ISS),
                    issuer_config("maskinporten", PROD_ISS),
                    issuer_config("elsewhere", "https://elsewhere.example/"),
                ],
                keys: VecKeys(Mutex::new(vec![
                    Some(keys.clone()),
                    Some(keys.clone()),
                    Some(keys),
                ])),
                max_token_bytes: 16384,
                now: NOW,
                cache: None,
                metrics: Metrics::new(),
            }
        }

        fn person() -> Setup {
            Setup::consent(person_rule())
        }

        fn token_route() -> Setup {
            let mut s = Setup::person();
            s.route.mode = AuthMode::Token;
            s.route.consent = None;
            s
        }

        fn with_cache(mut self) -> Setup {
            self.cache = Some(TokenCache::new(100, &self.metrics));
            self
        }

        fn ctx(&self) -> AuthContext<'_> {
            AuthContext {
                route: &self.route,
                issuers: &self.issuers,
                max_token_bytes: self.max_token_bytes,
                keys: &self.keys,
                now: self.now,
                cache: self.cache.as_ref(),
            }
        }

        fn run(&self, req: &Req) -> Result<Authorized, Denied> {
            authorize(&self.ctx(), &req.view(), None)
        }

        fn reason(&self, req: &Req) -> Reason {
            match self.run(req) {
                Ok(a) => panic!("expected a denial, got allow: {a:?}"),
                Err(d) => d.reason,
            }
        }

        fn allows(&self, req: &Req) -> Authorized {
            match self.run(req) {
                Ok(a) => a,
                Err(d) => panic!("expected allow, got {:?}", d.reason),
            }
        }

        fn cache_count(&self, result: &str) -> u64 {
            self.metrics
                .token_cache_requests_total
                .with_label_values(&[result])
                .get()
        }
    }

    #[derive(Clone)]
    struct Req {
        headers: HeaderMap,
        query: Option<String>,
        path_params: Vec<(String, String)>,
    }

    impl Req {
        fn none() -> Req {
            Req {
                headers: HeaderMap::new(),
                query: Some("tilogmed=2025-12".into()),
                path_params: vec![("fnr".into(), FNR.into())],
            }
        }

        fn authorization(value: &str) -> Req {
            Req::none().header("authorization", value)
        }

        fn bearer(token: &str) -> Req {
            Req::authorization(&format!("Bearer {token}"))
        }

        fn header(mut self, name: &'static str, value: &str) -> Req {
            self.headers
                .append(name, HeaderValue::from_str(value).unwrap());
            self
        }

        fn query(mut self, query: &str) -> Req {
            self.query = Some(query.into());
            self
        }

        fn fnr(mut self, fnr: &str) -> Req {
            self.path_params = vec![("fnr".into(), fnr.into())];
            self
        }

        fn view(&self) -> RequestView<'_> {
            RequestView {
                headers: &self.headers,
                query: self.query.as_deref(),
                path_params: &self.path_params,
                body: None,
            }
        }
    }

    /// consent-token.md's first example (person consent, direct consumer),
    /// its `iat`/`exp` moved to around `NOW`.
    fn person_payload() -> Value {
        json!({
          "authorization_details": [{
            "type": "urn:altinn:consent",
            "id": "019ca7e2-5b1d-7c3a-9f42-6d0e81b3a5c7",
            "from": "urn:altinn:person:identifier-no:17839116535",
            "to": { "authority": "iso6523-actorid-upis", "ID": "0192:310497460" },
            "consented": "2026-03-02T08:14:02.318877+00:00",
            "validTo": "2026-09-02T08:13:40.5512+00:00",
            "consentRights": [
              { "action": ["consent"],
                "resource": [{ "type": "urn:altinn:resource", "value": "demo-samtykke-inntekt" }],
                "metadata": { "fraogmed": "2025-01", "tilogmed": "2025-12" } },
              { "action": ["consent"],
                "resource": [{ "type": "urn:altinn:resource", "value": "demo-samtykke-skattegrunnlag" }],
                "metadata": { "inntektsaar": "2025" } }
            ]
          }],
          "scope": "demo:inntekt.read",
          "iss": "https://test.maskinporten.no/",
          "client_amr": "private_key_jwt",
          "token_type": "Bearer",
          "exp": NOW + 60.0,
          "iat": NOW - 60.0,
          "client_id": "60dc4612-87a4-41e7-869b-cc950e722928",
          "jti": "uSXA9_Oqo8fi5FUcGV29w7Mw9_bjyPEqdceltIdRp6w",
          "consumer": { "authority": "iso6523-actorid-upis", "ID": "0192:310497460" }
        })
    }

    /// The organisation example (production issuer, one VAT right).
    fn organization_payload() -> Value {
        let mut p = person_payload();
        p["iss"] = json!(PROD_ISS);
        let e = &mut p["authorization_details"][0];
        e["from"] = json!("urn:altinn:organization:identifier-no:302685991");
        e["consentRights"] = json!([{ "action": ["consent"],
            "resource": [{ "type": "urn:altinn:resource", "value": "demo-samtykke-mva-opplysninger" }] }]);
        p
    }

    /// The delegated example: a supplier acts for the consumer.
    fn delegated_payload() -> Value {
        let mut p = person_payload();
        p["supplier"] = json!({"authority": "iso6523-actorid-upis", "ID": SUPPLIER});
        p["delegation_source"] = json!("https://tt02.altinn.no/");
        p
    }

    fn sign(payload: &Value) -> String {
        issuer().sign(payload)
    }

    fn element(p: &mut Value) -> &mut Value {
        &mut p["authorization_details"][0]
    }

    fn with(mutate: impl FnOnce(&mut Value)) -> String {
        let mut p = person_payload();
        mutate(&mut p);
        sign(&p)
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    // ---- allow paths -------------------------------------------------------

    #[test]
    fn person_example_is_allowed_with_its_facts() {
        let s = Setup::person();
        let a = s.allows(&Req::bearer(&sign(&person_payload())));
        let token = a.token.unwrap();
        assert_eq!(token.issuer, "maskinporten-test");
        assert_eq!(token.consumer, CONSUMER);
        assert_eq!(token.supplier, None);
        assert_eq!(token.scope.as_deref(), Some("demo:inntekt.read"));
        assert_eq!(
            token.client_id.as_deref(),
            Some("60dc4612-87a4-41e7-869b-cc950e722928")
        );
        assert_eq!(
            token.jti.as_deref(),
            Some("uSXA9_Oqo8fi5FUcGV29w7Mw9_bjyPEqdceltIdRp6w")
        );
        let consent = a.consent.unwrap();
        assert_eq!(consent.id, "019ca7e2-5b1d-7c3a-9f42-6d0e81b3a5c7");
        assert_eq!(consent.from, "urn:altinn:person:identifier-no:17839116535");
        assert_eq!(consent.subject_type, SubjectType::Person);
        assert_eq!(consent.subject, FNR);
        assert_eq!(consent.to, CONSUMER);
        assert_eq!(consent.consented, "2026-03-02T08:14:02.318877+00:00");
        assert_eq!(consent.valid_to, "2026-09-02T08:13:40.5512+00:00");
        assert_eq!(consent.resource, "demo-samtykke-inntekt");
        assert_eq!(
            consent.metadata,
            vec![
                ("fraogmed".into(), "2025-01".into()),
                ("tilogmed".into(), "2025-12".into())
            ]
        );
    }

    #[test]
    fn organization_example_is_allowed_on_an_organization_route() {
        let s = Setup::consent(ConsentRule {
            resources: vec!["demo-samtykke-mva-opplysninger".into()],
            actions: vec!["consent".into()],
            subject: Some(Binding::Header("x-org".into())),
            subject_types: SubjectTypes {
                person: false,
                organization: true,
            },
            metadata_required: vec![],
            metadata_match: vec![],
        });
        let token = sign(&organization_payload());
        let a = s.allows(&Req::bearer(&token).header("X-Org", "302685991"));
        let consent = a.consent.unwrap();
        assert_eq!(consent.subject_type, SubjectType::Organization);
        assert_eq!(consent.subject, "302685991");
        assert!(consent.metadata.is_empty());
        assert_eq!(a.token.unwrap().issuer, "maskinporten");
        assert_eq!(
            s.reason(&Req::bearer(&token).header("x-org", "302685992")),
            Reason::ConsentSubjectMismatch
        );
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentSubjectMismatch
        );
        assert_eq!(
            s.reason(
                &Req::bearer(&token)
                    .header("x-org", "302685991")
                    .header("x-org", "302685991")
            ),
            Reason::InvalidRequest
        );
        // A person consent is not of an allowed type here.
        let person = with(|p| {
            element(p)["consentRights"] =
                organization_payload()["authorization_details"][0]["consentRights"].clone();
        });
        assert_eq!(
            s.reason(&Req::bearer(&person).header("x-org", FNR)),
            Reason::ConsentSubjectMismatch
        );
    }

    #[test]
    fn delegated_example_with_to_equal_to_consumer_is_allowed() {
        let mut s = Setup::person();
        let token = sign(&delegated_payload());
        let a = s.allows(&Req::bearer(&token));
        assert_eq!(a.token.unwrap().supplier.as_deref(), Some(SUPPLIER));
        s.route.delegation.suppliers = Some(HashSet::from([SUPPLIER.to_string()]));
        s.allows(&Req::bearer(&token));
        s.route.delegation.suppliers = Some(HashSet::from(["0192:999999999".to_string()]));
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::SupplierNotAllowed);
        s.route.delegation = DelegationRule {
            allow: false,
            suppliers: None,
        };
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::SupplierNotAllowed);
        // Without a supplier, delegation rules do not apply.
        s.allows(&Req::bearer(&sign(&person_payload())));
        // `to` naming the supplier instead of the consumer is wrong.
        let mut p = delegated_payload();
        element(&mut p)["to"]["ID"] = json!(SUPPLIER);
        s.route.delegation = DelegationRule::default();
        assert_eq!(
            s.reason(&Req::bearer(&sign(&p))),
            Reason::ConsentRecipientMismatch
        );
    }

    #[test]
    fn auth_none_skips_everything_and_token_routes_stop_after_14() {
        let mut s = Setup::person();
        s.route.mode = AuthMode::None;
        assert_eq!(s.run(&Req::none()), Ok(Authorized::default()));
        let s = Setup::token_route();
        // No consent at all, and malformed consent elements, are fine on a token route.
        let token = with(|p| {
            p["authorization_details"] = json!("garbage");
        });
        let a = s.allows(&Req::bearer(&token).query(""));
        assert!(a.consent.is_none());
        assert_eq!(a.token.unwrap().consumer, CONSUMER);
        assert_eq!(s.reason(&Req::none()), Reason::MissingToken);
    }

    // ---- check 3 -----------------------------------------------------------

    #[test]
    fn check_3_bearer_extraction() {
        let s = Setup::person();
        let token = sign(&person_payload());
        assert_eq!(s.reason(&Req::none()), Reason::MissingToken);
        assert_eq!(
            s.reason(&Req::authorization("Basic dXNlcjpwYXNz")),
            Reason::MissingToken
        );
        assert_eq!(s.reason(&Req::authorization("")), Reason::MissingToken);
        assert_eq!(
            s.reason(&Req::authorization(&format!("Bearer{token}"))),
            Reason::MissingToken
        );
        assert_eq!(
            s.reason(&Req::authorization("Bearer")),
            Reason::InvalidTokenRequest
        );
        assert_eq!(
            s.reason(&Req::authorization("Bearer ")),
            Reason::InvalidTokenRequest
        );
        assert_eq!(
            s.reason(&Req::authorization(&format!("Bearer {token} {token}"))),
            Reason::InvalidTokenRequest
        );
        assert_eq!(
            s.reason(&Req::authorization(&format!("Bearer {token}\tx"))),
            Reason::InvalidTokenRequest
        );
        assert_eq!(
            s.reason(&Req::bearer(&token).header("authorization", &format!("Bearer {token}"))),
            Reason::InvalidTokenRequest
        );
        assert_eq!(
            s.reason(&Req::bearer(&token).header("authorization", "Basic eA==")),
            Reason::InvalidTokenRequest
        );
        for query in [
            format!("access_token={token}"),
            "tilogmed=2025-12&access_token=x".to_string(),
            "access%5Ftoken=x&tilogmed=2025-12".to_string(),
            "access_token".to_string(),
        ] {
            assert_eq!(
                s.reason(&Req::none().query(&query)),
                Reason::InvalidTokenRequest,
                "{query}"
            );
            assert_eq!(
                s.reason(&Req::bearer(&token).query(&query)),
                Reason::InvalidTokenRequest,
                "{query}"
            );
        }
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            s.allows(&Req::authorization(&format!("{scheme} {token}")));
        }
        s.allows(&Req::authorization(&format!("Bearer   {token}")));
        s.allows(&Req::authorization(&format!(" Bearer {token} ")));
        assert_eq!(Reason::MissingToken.status(), 401);
        assert_eq!(Reason::InvalidTokenRequest.status(), 400);
    }

    // ---- check 4 -----------------------------------------------------------

    #[test]
    fn check_4_size_limit_is_exact() {
        let mut s = Setup::person();
        let token = sign(&person_payload());
        s.max_token_bytes = token.len();
        s.allows(&Req::bearer(&token));
        s.max_token_bytes = token.len() - 1;
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::MalformedToken);
    }

    #[test]
    fn check_4_strict_compact_serialization() {
        let s = Setup::person();
        let token = sign(&person_payload());
        let parts: Vec<&str> = token.split('.').collect();
        let payload = person_payload().to_string();
        let header = r#"{"kid":"mp-1","alg":"RS256"}"#;
        let cases = [
            format!("{}.{}", parts[0], parts[1]),
            format!("{token}.x"),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}=.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}.+{}.{}", parts[0], &parts[1][1..], parts[2]),
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                parts[2].replacen(|c: char| c.is_ascii_alphanumeric(), "/", 1)
            ),
            format!("{}.{}.{}", b64("[]"), parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], b64("not json"), parts[2]),
            // Duplicate members, validly signed: refused before the signature.
            issuer().sign_raw(r#"{"kid":"mp-1","alg":"RS256","alg":"none"}"#, &payload),
            issuer().sign_raw(
                header,
                &payload.replacen('{', r#"{"iss":"https://evil.example/","#, 1),
            ),
            issuer().sign_raw(
                header,
                &payload.replacen(
                    r#""ID":"0192:310497460""#,
                    r#""ID":"0192:310497460","ID":"0192:999999999""#,
                    1,
                ),
            ),
        ];
        for token in cases {
            assert_eq!(
                s.reason(&Req::bearer(&token)),
                Reason::MalformedToken,
                "{token}"
            );
        }
        // The raw signer itself produces acceptable tokens.
        s.allows(&Req::bearer(&issuer().sign_raw(header, &payload)));
    }

    // ---- check 5 -----------------------------------------------------------

    #[test]
    fn check_5_kid_and_crit() {
        let s = Setup::person();
        let payload = person_payload().to_string();
        let denied = s
            .run(&Req::bearer(
                &issuer().sign_raw(r#"{"alg":"RS256"}"#, &payload),
            ))
            .unwrap_err();
        assert_eq!(denied.reason, Reason::UnknownKey);
        assert_eq!(denied.refetch, None);
        let crit = issuer().sign_raw(
            r#"{"kid":"mp-1","alg":"RS256","crit":["exp"],"exp":1}"#,
            &payload,
        );
        assert_eq!(s.reason(&Req::bearer(&crit)), Reason::MalformedToken);
        let kid_number = issuer().sign_raw(r#"{"kid":1,"alg":"RS256"}"#, &payload);
        assert_eq!(s.reason(&Req::bearer(&kid_number)), Reason::MalformedToken);
    }

    // ---- check 6 -----------------------------------------------------------

    #[test]
    fn check_6_issuer_then_algorithm() {
        let s = Setup::person();
        for iss in [
            json!("https://test.maskinporten.no"),
            json!("https://evil.example/"),
            json!(1),
            json!("https://elsewhere.example/"),
        ] {
            let token = with(|p| p["iss"] = iss.clone());
            assert_eq!(
                s.reason(&Req::bearer(&token)),
                Reason::IssuerNotAllowed,
                "{iss}"
            );
        }
        let token = with(|p| {
            p.as_object_mut().unwrap().remove("iss");
        });
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::IssuerNotAllowed);
        // Issuer first: a wrong issuer with `alg: none` is issuer_not_allowed.
        let mut evil = person_payload();
        evil["iss"] = json!("https://evil.example/");
        let unsigned = format!(
            "{}.{}.",
            b64(r#"{"kid":"mp-1","alg":"none"}"#),
            b64(&evil.to_string())
        );
        assert_eq!(s.reason(&Req::bearer(&unsigned)), Reason::IssuerNotAllowed);

        let payload = person_payload().to_string();
        for alg in ["none", "None", "NONE", "HS256", "rs256", "RS384", "EdDSA"] {
            let header = format!(r#"{{"kid":"mp-1","alg":"{alg}"}}"#);
            let unsigned = format!("{}.{}.", b64(&header), b64(&payload));
            assert_eq!(
                s.reason(&Req::bearer(&unsigned)),
                Reason::AlgorithmNotAllowed,
                "{alg}"
            );
            let signed = issuer().sign_raw(&header, &payload);
            assert_eq!(
                s.reason(&Req::bearer(&signed)),
                Reason::AlgorithmNotAllowed,
                "{alg}"
            );
        }
        let no_alg = issuer().sign_raw(r#"{"kid":"mp-1"}"#, &payload);
        assert_eq!(s.reason(&Req::bearer(&no_alg)), Reason::AlgorithmNotAllowed);
        // A real RS384 token: the key could verify it, but the issuer allows RS256 only.
        let rs384 = issuer().sign_with(Alg::RS384, &person_payload()).unwrap();
        assert_eq!(s.reason(&Req::bearer(&rs384)), Reason::AlgorithmNotAllowed);
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let s = Setup::person();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("mp-1".into());
        for secret in [
            issuer().jwks_json().into_bytes(),
            issuer().jwk()["n"].as_str().unwrap().as_bytes().to_vec(),
        ] {
            let token = jsonwebtoken::encode(
                &header,
                &person_payload(),
                &jsonwebtoken::EncodingKey::from_secret(&secret),
            )
            .unwrap();
            assert_eq!(s.reason(&Req::bearer(&token)), Reason::AlgorithmNotAllowed);
        }
    }

    // ---- checks 7-9 --------------------------------------------------------

    #[test]
    fn check_7_keys_unavailable() {
        let s = Setup::person();
        s.keys.set(vec![None, None]);
        assert_eq!(
            s.reason(&Req::bearer(&sign(&person_payload()))),
            Reason::KeysUnavailable
        );
        assert_eq!(Reason::KeysUnavailable.status(), 503);
    }

    #[test]
    fn check_8_unknown_kid_asks_for_a_refetch() {
        let s = Setup::person();
        let other = DevIssuer::generate("rotated-2").unwrap();
        let denied = s
            .run(&Req::bearer(&other.sign(&person_payload())))
            .unwrap_err();
        assert_eq!(denied.reason, Reason::UnknownKey);
        assert_eq!(denied.refetch, Some((0, "rotated-2".to_string())));
        assert_eq!(denied.facts, DeniedFacts::default());
        // After the refetch brings the key, the same token passes.
        let mut doc = serde_json::from_str::<Value>(&issuer().jwks_json()).unwrap();
        doc["keys"].as_array_mut().unwrap().push(other.jwk());
        let both =
            Arc::new(KeySet::parse(doc.to_string().as_bytes(), &[Alg::RS256], None).unwrap());
        s.keys.set(vec![Some(both), None]);
        s.allows(&Req::bearer(&other.sign(&person_payload())));
    }

    #[test]
    fn check_8_a_kid_whose_key_cannot_verify_the_alg_is_unknown() {
        // An issuer allowing RSA and EC: an ES256 token naming the RSA kid
        // has no usable key (SPEC section 6), so it is unknown_key, not
        // bad_signature.
        let mut s = Setup::person();
        s.issuers[0].algorithms = vec![Alg::RS256, Alg::ES256];
        let both = &[Alg::RS256, Alg::ES256];
        let keys = KeySet::parse(issuer().jwks_json().as_bytes(), both, None).unwrap();
        s.keys.set(vec![Some(Arc::new(keys)), None]);
        let kid = issuer().jwk()["kid"].as_str().unwrap().to_string();
        let header = json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
        let token = format!(
            "{}.{}.{}",
            b64(&header.to_string()),
            b64(&person_payload().to_string()),
            b64("not a signature")
        );
        let denied = s.run(&Req::bearer(&token)).unwrap_err();
        assert_eq!(denied.reason, Reason::UnknownKey);
        assert_eq!(denied.refetch, Some((0, kid)));
        // The same key still verifies what it can: an RS256 token passes.
        s.allows(&Req::bearer(&sign(&person_payload())));
    }

    #[test]
    fn check_9_signature() {
        let s = Setup::person();
        let token = sign(&person_payload());
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
        raw[10] ^= 1;
        let flipped = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&raw));
        let denied = s.run(&Req::bearer(&flipped)).unwrap_err();
        assert_eq!(denied.reason, Reason::BadSignature);
        assert_eq!(
            denied.facts,
            DeniedFacts::default(),
            "no facts from an unverified token"
        );
        // Same kid, attacker's key.
        assert_eq!(
            s.reason(&Req::bearer(&attacker().sign(&person_payload()))),
            Reason::BadSignature
        );
        // A valid signature over another payload.
        let other = with(|p| p["scope"] = json!("demo:inntekt.read admin"));
        let spliced = format!("{}.{}", message, other.rsplit_once('.').unwrap().1);
        assert_eq!(s.reason(&Req::bearer(&spliced)), Reason::BadSignature);
        // No signature at all.
        assert_eq!(
            s.reason(&Req::bearer(&format!("{message}."))),
            Reason::BadSignature
        );
    }

    #[test]
    fn embedded_keys_in_the_header_are_never_used() {
        let s = Setup::person();
        let evil = attacker();
        let payload = person_payload().to_string();
        let jwk = evil.jwk().to_string();
        for (kid, extra) in [
            ("mp-1", format!(r#""jwk":{jwk}"#)),
            ("mp-1", r#""jku":"https://evil.example/jwks""#.to_string()),
            (
                "mp-1",
                r#""x5u":"https://evil.example/cert.pem""#.to_string(),
            ),
            (
                "mp-1",
                r#""x5c":["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]"#.to_string(),
            ),
            ("evil", format!(r#""jwk":{jwk}"#)),
            ("evil", r#""jku":"https://evil.example/jwks""#.to_string()),
        ] {
            let header = format!(r#"{{"kid":"{kid}","alg":"RS256",{extra}}}"#);
            let token = evil.sign_raw(&header, &payload);
            let expected = if kid == "evil" {
                Reason::UnknownKey
            } else {
                Reason::BadSignature
            };
            assert_eq!(s.reason(&Req::bearer(&token)), expected, "{header}");
        }
    }

    // ---- check 10 ----------------------------------------------------------

    #[test]
    fn check_10_missing_claims() {
        let mut s = Setup::person();
        for claim in ["exp", "consumer"] {
            let token = with(|p| {
                p.as_object_mut().unwrap().remove(claim);
            });
            assert_eq!(
                s.reason(&Req::bearer(&token)),
                Reason::MissingClaim,
                "{claim}"
            );
        }
        let no_iat = with(|p| {
            p.as_object_mut().unwrap().remove("iat");
        });
        s.allows(&Req::bearer(&no_iat));
        s.issuers[0].max_token_lifetime = Some(Duration::from_secs(3600));
        assert_eq!(s.reason(&Req::bearer(&no_iat)), Reason::MissingClaim);
        // Absence is reported before ill-typed claims.
        let both = with(|p| {
            p.as_object_mut().unwrap().remove("consumer");
            p["exp"] = json!("soon");
        });
        assert_eq!(s.reason(&Req::bearer(&both)), Reason::MissingClaim);
    }

    type Mutation = Box<dyn Fn(&mut Value)>;

    #[test]
    fn check_10_ill_typed_or_unsafe_claims() {
        let s = Setup::person();
        let mutations: Vec<(&str, Mutation)> = vec![
            (
                "exp as a string",
                Box::new(|p| p["exp"] = json!((NOW + 60.0).to_string())),
            ),
            ("nbf as a bool", Box::new(|p| p["nbf"] = json!(true))),
            ("iat null", Box::new(|p| p["iat"] = json!(null))),
            (
                "consumer as a string",
                Box::new(|p| p["consumer"] = json!(CONSUMER)),
            ),
            (
                "consumer.ID a number",
                Box::new(|p| p["consumer"]["ID"] = json!(310497460)),
            ),
            (
                "supplier without ID",
                Box::new(|p| p["supplier"] = json!({"authority": "x"})),
            ),
            (
                "scope an array",
                Box::new(|p| p["scope"] = json!(["demo:inntekt.read"])),
            ),
            (
                "scope with CRLF",
                Box::new(|p| p["scope"] = json!("demo:inntekt.read\r\nX-Consent-Subject: 1")),
            ),
            ("jti with NUL", Box::new(|p| p["jti"] = json!("a\u{0}b"))),
            (
                "client_id a number",
                Box::new(|p| p["client_id"] = json!(5)),
            ),
            ("aud a number", Box::new(|p| p["aud"] = json!(5))),
            (
                "consent id with LF",
                Box::new(|p| element(p)["id"] = json!("x\ny")),
            ),
            (
                "validTo not a time",
                Box::new(|p| element(p)["validTo"] = json!("2026-09-02")),
            ),
            ("to a number", Box::new(|p| element(p)["to"] = json!(1))),
            (
                "metadata keys equal lowercased",
                Box::new(|p| {
                    element(p)["consentRights"][0]["metadata"] =
                        json!({"fraogmed": "2025-01", "FraOgMed": "2024-01", "tilogmed": "2025-12"})
                }),
            ),
            (
                "metadata value a number",
                Box::new(|p| element(p)["consentRights"][0]["metadata"]["tilogmed"] = json!(2025)),
            ),
            (
                "authorization_details an object",
                Box::new(|p| p["authorization_details"] = json!({})),
            ),
        ];
        for (name, mutate) in mutations {
            let token = with(|p| mutate(p));
            assert_eq!(
                s.reason(&Req::bearer(&token)),
                Reason::MalformedToken,
                "{name}"
            );
        }
    }

    // ---- check 11 ----------------------------------------------------------

    #[test]
    fn check_11_expiry_boundary_is_exact() {
        let mut s = Setup::person();
        let token = with(|p| p["exp"] = json!(NOW - LEEWAY));
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::TokenExpired);
        let token = with(|p| p["exp"] = json!(NOW - LEEWAY + 0.5));
        s.allows(&Req::bearer(&token));
        // Moving the clock: the same token expires exactly at exp + L.
        let token = sign(&person_payload());
        s.now = NOW + 60.0 + LEEWAY - 0.001;
        s.allows(&Req::bearer(&token));
        s.now = NOW + 60.0 + LEEWAY;
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::TokenExpired);
    }

    #[test]
    fn check_11_not_before_issued_at_lifetime_audience() {
        let mut s = Setup::person();
        s.allows(&Req::bearer(&with(|p| p["nbf"] = json!(NOW + LEEWAY))));
        assert_eq!(
            s.reason(&Req::bearer(
                &with(|p| p["nbf"] = json!(NOW + LEEWAY + 1.0))
            )),
            Reason::TokenNotYetValid
        );
        s.allows(&Req::bearer(&with(|p| p["iat"] = json!(NOW + LEEWAY))));
        assert_eq!(
            s.reason(&Req::bearer(
                &with(|p| p["iat"] = json!(NOW + LEEWAY + 1.0))
            )),
            Reason::TokenNotYetValid
        );

        s.issuers[0].max_token_lifetime = Some(Duration::from_secs(120));
        s.allows(&Req::bearer(&sign(&person_payload()))); // exactly 120 s
        let long = with(|p| p["exp"] = json!(NOW + 61.0));
        assert_eq!(s.reason(&Req::bearer(&long)), Reason::TokenLifetimeTooLong);
        s.issuers[0].max_token_lifetime = None;

        s.issuers[0].audiences = vec!["https://api.example.no".into()];
        assert_eq!(
            s.reason(&Req::bearer(&sign(&person_payload()))),
            Reason::AudienceMismatch
        );
        assert_eq!(
            s.reason(&Req::bearer(&with(
                |p| p["aud"] = json!("https://other.example")
            ))),
            Reason::AudienceMismatch
        );
        s.allows(&Req::bearer(&with(|p| {
            p["aud"] = json!("https://api.example.no")
        })));
        s.allows(&Req::bearer(&with(|p| {
            p["aud"] = json!(["x", "https://api.example.no"])
        })));
        assert_eq!(
            s.reason(&Req::bearer(&with(|p| p["aud"] = json!([])))),
            Reason::AudienceMismatch
        );
    }

    // ---- checks 12-14 ------------------------------------------------------

    #[test]
    fn check_12_scopes() {
        let mut s = Setup::person();
        let token = with(|p| p["scope"] = json!("other:read  demo:inntekt.read"));
        s.allows(&Req::bearer(&token));
        assert_eq!(
            s.reason(&Req::bearer(&with(
                |p| p["scope"] = json!("demo:inntekt.readx")
            ))),
            Reason::InsufficientScope
        );
        assert_eq!(
            s.reason(&Req::bearer(&with(|p| {
                p.as_object_mut().unwrap().remove("scope");
            }))),
            Reason::InsufficientScope
        );
        s.route.scopes = ScopeRule {
            all: vec![],
            any: vec!["a".into(), "other:read".into()],
        };
        s.allows(&Req::bearer(&token));
        s.route.scopes.any = vec!["a".into(), "b".into()];
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::InsufficientScope);
        s.route.scopes = ScopeRule::default();
        s.allows(&Req::bearer(&with(|p| {
            p.as_object_mut().unwrap().remove("scope");
        })));
    }

    #[test]
    fn check_14_consumer_access_list() {
        let mut s = Setup::person();
        let token = sign(&person_payload());
        s.route.consumers = Some(HashSet::from(["0192:991825827".to_string()]));
        let denied = s.run(&Req::bearer(&token)).unwrap_err();
        assert_eq!(denied.reason, Reason::ConsumerNotAllowed);
        assert_eq!(denied.facts.consumer.as_deref(), Some(CONSUMER));
        s.route.consumers = Some(HashSet::from([CONSUMER.to_string()]));
        s.allows(&Req::bearer(&token));
    }

    // ---- checks 15-21 ------------------------------------------------------

    #[test]
    fn check_15_consent_element_exists() {
        let s = Setup::person();
        for details in [
            None,
            Some(json!([])),
            Some(json!([{"type": "urn:altinn:systemuser", "systemuserOrg": {"ID": CONSUMER}}])),
            Some(json!([{"type": "urn:altinn:concent"}])),
        ] {
            let token = with(|p| match &details {
                None => {
                    p.as_object_mut().unwrap().remove("authorization_details");
                }
                Some(d) => p["authorization_details"] = d.clone(),
            });
            assert_eq!(
                s.reason(&Req::bearer(&token)),
                Reason::ConsentMissing,
                "{details:?}"
            );
        }
        // A system-user element beside a consent element does not hurt.
        let token = with(|p| {
            let consent = element(p).clone();
            p["authorization_details"] = json!([{"type": "urn:altinn:systemuser"}, consent]);
        });
        s.allows(&Req::bearer(&token));
    }

    #[test]
    fn check_17_recipient() {
        let s = Setup::person();
        let token = with(|p| element(p)["to"]["ID"] = json!("0192:999999999"));
        let denied = s.run(&Req::bearer(&token)).unwrap_err();
        assert_eq!(denied.reason, Reason::ConsentRecipientMismatch);
        assert_eq!(
            denied.facts.consent_id.as_deref(),
            Some("019ca7e2-5b1d-7c3a-9f42-6d0e81b3a5c7")
        );
        assert_eq!(denied.facts.subject.as_deref(), Some(FNR));
        assert_eq!(denied.facts.consumer.as_deref(), Some(CONSUMER));
        // The older URN form.
        let urn =
            with(|p| element(p)["to"] = json!("urn:altinn:organization:identifier-no:310497460"));
        assert_eq!(s.allows(&Req::bearer(&urn)).consent.unwrap().to, CONSUMER);
        let wrong_urn =
            with(|p| element(p)["to"] = json!("urn:altinn:organization:identifier-no:999999999"));
        assert_eq!(
            s.reason(&Req::bearer(&wrong_urn)),
            Reason::ConsentRecipientMismatch
        );
        let person_urn =
            with(|p| element(p)["to"] = json!("urn:altinn:person:identifier-no:310497460"));
        assert_eq!(
            s.reason(&Req::bearer(&person_urn)),
            Reason::ConsentRecipientMismatch
        );
    }

    #[test]
    fn check_18_consent_validity_boundaries() {
        let mut s = Setup::person();
        let at = |t: f64| unix_rfc3339(t);
        let token = with(|p| element(p)["consented"] = json!(at(NOW + LEEWAY)));
        s.allows(&Req::bearer(&token));
        let token = with(|p| element(p)["consented"] = json!(at(NOW + LEEWAY + 1.0)));
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::ConsentNotYetValid);
        let token = with(|p| element(p)["validTo"] = json!(at(NOW - LEEWAY)));
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::ConsentExpired);
        let token = with(|p| element(p)["validTo"] = json!(at(NOW - LEEWAY + 0.5)));
        s.allows(&Req::bearer(&token));
        // Offsets count: 10:16:40+02:00 is NOW.
        let token = with(|p| element(p)["validTo"] = json!("2026-03-02T10:16:10+02:00"));
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::ConsentExpired);
        // The example's own validTo, half a year later.
        s.now = 1_788_336_820.551_2 + LEEWAY;
        let mut p = person_payload();
        p["exp"] = json!(s.now + 60.0);
        p["iat"] = json!(s.now - 60.0);
        assert_eq!(s.reason(&Req::bearer(&sign(&p))), Reason::ConsentExpired);
    }

    #[test]
    fn check_19_resource_and_actions() {
        let mut s = Setup::person();
        let token = with(|p| {
            element(p)["consentRights"][0]["resource"][0]["value"] = json!("demo-samtykke-annet")
        });
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentResourceMismatch
        );
        let token = with(|p| {
            element(p)["consentRights"][0]["resource"][0]["type"] = json!("urn:altinn:app")
        });
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentResourceMismatch
        );
        let token = with(|p| element(p)["consentRights"][0]["action"] = json!(["read"]));
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentResourceMismatch
        );
        let token = with(|p| element(p)["consentRights"] = json!([]));
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentResourceMismatch
        );
        // Every configured action must be listed in the same right.
        if let Some(rule) = s.route.consent.as_mut() {
            rule.actions = vec!["consent".into(), "read".into()];
        }
        assert_eq!(
            s.reason(&Req::bearer(&sign(&person_payload()))),
            Reason::ConsentResourceMismatch
        );
        let token = with(|p| element(p)["consentRights"][0]["action"] = json!(["read", "consent"]));
        s.allows(&Req::bearer(&token));
    }

    #[test]
    fn check_20_subject() {
        let mut s = Setup::person();
        let token = sign(&person_payload());
        let denied = s.run(&Req::bearer(&token).fnr("17839116536")).unwrap_err();
        assert_eq!(denied.reason, Reason::ConsentSubjectMismatch);
        assert_eq!(denied.facts.subject.as_deref(), Some(FNR));
        let mut absent = Req::bearer(&token);
        absent.path_params.clear();
        assert_eq!(s.reason(&absent), Reason::ConsentSubjectMismatch);
        // Percent-decoded before comparison.
        s.allows(&Req::bearer(&token).fnr("1783911%365%33%35"));
        for malformed in [
            "urn:altinn:person:identifier-no:1783911653",
            "urn:altinn:person:identifier-no:1783911653X",
            "urn:altinn:persons:identifier-no:17839116535",
            "17839116535",
        ] {
            let t = with(|p| element(p)["from"] = json!(malformed));
            assert_eq!(
                s.reason(&Req::bearer(&t).fnr(malformed)),
                Reason::ConsentSubjectMismatch,
                "{malformed}"
            );
        }
        if let Some(rule) = s.route.consent.as_mut() {
            rule.subject_types.person = false;
        }
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentSubjectMismatch
        );
        // No binding: the subject is only checked for shape and type.
        if let Some(rule) = s.route.consent.as_mut() {
            rule.subject_types.person = true;
            rule.subject = None;
        }
        s.allows(&Req::bearer(&token).fnr("00000000000"));
    }

    #[test]
    fn bound_values_given_twice_are_invalid_requests() {
        let mut s = Setup::person();
        let token = sign(&person_payload());
        assert_eq!(
            s.reason(&Req::bearer(&token).query("tilogmed=2025-12&tilogmed=2025-12")),
            Reason::InvalidRequest
        );
        assert_eq!(
            s.reason(&Req::bearer(&token).query("tilogmed=2025-12&tilog%6Ded=2024-12")),
            Reason::InvalidRequest
        );
        assert_eq!(
            s.reason(&Req::none().query("tilogmed=a&tilogmed=b")),
            Reason::InvalidRequest
        );
        if let Some(rule) = s.route.consent.as_mut() {
            rule.subject = Some(Binding::Query("fnr".into()));
        }
        assert_eq!(
            s.reason(&Req::bearer(&token).query(&format!("tilogmed=2025-12&fnr={FNR}&fnr=1"))),
            Reason::InvalidRequest
        );
        s.allows(&Req::bearer(&token).query(&format!("fnr={FNR}&tilogmed=2025-12")));
        // '+' is not a space, and values compare exactly.
        assert_eq!(
            s.reason(&Req::bearer(&token).query(&format!("fnr={FNR}&tilogmed=2025-12+"))),
            Reason::ConsentMetadataMismatch
        );
        assert_eq!(
            s.reason(&Req::bearer(&token).query(&format!("fnr=+{FNR}&tilogmed=2025-12"))),
            Reason::ConsentSubjectMismatch
        );
    }

    #[test]
    fn header_binding_spelt_two_ways_is_an_invalid_request() {
        // CGI-style backends (WSGI, Rack, PHP) read `X_Person_Id` and
        // `x.person.id` as `X-Person-Id`: the gateway must not bind one value
        // while the backend reads another.
        let mut s = Setup::person();
        if let Some(rule) = s.route.consent.as_mut() {
            rule.subject = Some(Binding::Header("x-person-id".into()));
        }
        let token = sign(&person_payload());
        s.allows(&Req::bearer(&token).header("x-person-id", FNR));
        for alias in ["x_person_id", "x.person.id", "x~person~id"] {
            assert_eq!(
                s.reason(
                    &Req::bearer(&token)
                        .header("x-person-id", FNR)
                        .header(alias, "05917596738")
                ),
                Reason::InvalidRequest,
                "{alias}"
            );
            assert_eq!(
                s.reason(
                    &Req::bearer(&token)
                        .header(alias, "05917596738")
                        .header("x-person-id", FNR)
                ),
                Reason::InvalidRequest,
                "{alias} first"
            );
        }
        // An alias alone is not the bound header: the value is absent.
        assert_eq!(
            s.reason(&Req::bearer(&token).header("x_person_id", FNR)),
            Reason::ConsentSubjectMismatch
        );
        // Other names that merely start alike are no aliases.
        s.allows(
            &Req::bearer(&token)
                .header("x-person-id", FNR)
                .header("x-person-id-type", "fnr"),
        );
    }

    #[test]
    fn query_binding_spelt_two_ways_is_an_invalid_request() {
        // Backends differ on query syntax: ASP.NET Core compares names
        // case-insensitively, Rack and older Python split on `;` too, PHP and
        // Rack drop a leading space (`+`) and read `fnr[]` as `fnr`. A second
        // spelling of a bound name is as ambiguous as a second `fnr=`.
        let mut s = Setup::person();
        if let Some(rule) = s.route.consent.as_mut() {
            rule.subject = Some(Binding::Query("fnr".into()));
        }
        let token = sign(&person_payload());
        let other = "05917596738";
        s.allows(&Req::bearer(&token).query(&format!("fnr={FNR}&tilogmed=2025-12")));
        for query in [
            format!("FNR={other}&fnr={FNR}&tilogmed=2025-12"),
            format!("fnr={FNR}&%46nr={other}&tilogmed=2025-12"),
            format!("x=1;fnr={other}&fnr={FNR}&tilogmed=2025-12"),
            format!("fnr={FNR}&tilogmed=2025-12;fnr={other}"),
            format!("fnr={FNR}&+fnr={other}&tilogmed=2025-12"),
            format!("fnr={FNR}&fnr[]={other}&tilogmed=2025-12"),
            format!("fnr={FNR}&tilogmed=2025-12&TilOgMed=2024-12"),
        ] {
            assert_eq!(
                s.reason(&Req::bearer(&token).query(&query)),
                Reason::InvalidRequest,
                "{query}"
            );
        }
        // Names that merely start alike are no aliases.
        s.allows(
            &Req::bearer(&token).query(&format!("fnr={FNR}&fnr_type=p&xfnr=1&tilogmed=2025-12")),
        );
        // An alias alone is not the bound name: the value is absent.
        assert_eq!(
            s.reason(&Req::bearer(&token).query(&format!("FNR={FNR}&tilogmed=2025-12"))),
            Reason::ConsentSubjectMismatch
        );
    }

    #[test]
    fn access_token_in_the_query_is_refused_in_every_spelling() {
        let s = Setup::person();
        let token = sign(&person_payload());
        for query in [
            "tilogmed=2025-12&ACCESS_TOKEN=x",
            "tilogmed=2025-12;access_token=x",
            "tilogmed=2025-12&access%5Ftoken=x",
        ] {
            assert_eq!(
                s.reason(&Req::bearer(&token).query(query)),
                Reason::InvalidTokenRequest,
                "{query}"
            );
        }
    }

    #[test]
    fn check_21_metadata_of_the_same_right() {
        let mut s = Setup::person();
        let token = sign(&person_payload());
        assert_eq!(
            s.reason(&Req::bearer(&token).query("tilogmed=2024-12")),
            Reason::ConsentMetadataMismatch
        );
        assert_eq!(
            s.reason(&Req::bearer(&token).query("")),
            Reason::ConsentMetadataMismatch
        );
        s.allows(&Req::bearer(&token).query("tilogmed=2025%2D12"));
        let token = with(|p| {
            element(p)["consentRights"][0]["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("fraogmed");
        });
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentMetadataMismatch
        );
        // `metaData` spelling and upper-case keys.
        let token = with(|p| {
            let right = &mut element(p)["consentRights"][0];
            right.as_object_mut().unwrap().remove("metadata");
            right["metaData"] = json!({"FraOgMed": "2025-01", "TILOGMED": "2025-12"});
        });
        let consent = s.allows(&Req::bearer(&token)).consent.unwrap();
        assert_eq!(
            consent.metadata[1],
            ("tilogmed".to_string(), "2025-12".to_string())
        );
        // Header binding, with a header name in any case.
        if let Some(rule) = s.route.consent.as_mut() {
            rule.metadata_match = vec![("tilogmed".into(), Binding::Header("x-til".into()))];
        }
        s.allows(&Req::bearer(&sign(&person_payload())).header("X-Til", "2025-12"));
        assert_eq!(
            s.reason(&Req::bearer(&sign(&person_payload())).header("X-Til", "2025%2D12")),
            Reason::ConsentMetadataMismatch
        );
        assert_eq!(
            s.reason(
                &Req::bearer(&sign(&person_payload()))
                    .header("X-Til", "2025-12")
                    .header("x-til", "2025-12")
            ),
            Reason::InvalidRequest
        );
    }

    #[test]
    fn the_same_resource_in_several_rights_is_tried_right_by_right() {
        let s = Setup::person();
        let token = with(|p| {
            element(p)["consentRights"] = json!([
                {"action": ["consent"], "resource": [{"type": "urn:altinn:resource", "value": "demo-samtykke-inntekt"}],
                 "metadata": {"fraogmed": "2023-01", "tilogmed": "2023-12"}},
                {"action": ["consent"], "resource": [{"type": "urn:altinn:resource", "value": "demo-samtykke-inntekt"}],
                 "metadata": {"fraogmed": "2024-01", "tilogmed": "2024-12"}},
            ]);
        });
        let a = s.allows(&Req::bearer(&token).query("tilogmed=2024-12"));
        assert_eq!(a.consent.unwrap().metadata[0].1, "2024-01");
        let a = s.allows(&Req::bearer(&token).query("tilogmed=2023-12"));
        assert_eq!(a.consent.unwrap().metadata[0].1, "2023-01");
        assert_eq!(
            s.reason(&Req::bearer(&token).query("tilogmed=2025-12")),
            Reason::ConsentMetadataMismatch
        );
    }

    #[test]
    fn a_second_right_never_supplies_what_the_first_lacks() {
        let s = Setup::person();
        // Right 1 has the required key, right 2 the matched value: neither alone.
        let token = with(|p| {
            element(p)["consentRights"] = json!([
                {"action": ["consent"], "resource": [{"type": "urn:altinn:resource", "value": "demo-samtykke-inntekt"}],
                 "metadata": {"fraogmed": "2025-01"}},
                {"action": ["consent"], "resource": [{"type": "urn:altinn:resource", "value": "demo-samtykke-inntekt"}],
                 "metadata": {"tilogmed": "2025-12"}},
            ]);
        });
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentMetadataMismatch
        );
        // The resource in one right, the action in another.
        let token = with(|p| {
            element(p)["consentRights"] = json!([
                {"action": ["read"], "resource": [{"type": "urn:altinn:resource", "value": "demo-samtykke-inntekt"}],
                 "metadata": {"fraogmed": "2025-01", "tilogmed": "2025-12"}},
                {"action": ["consent"], "resource": [{"type": "urn:altinn:resource", "value": "demo-samtykke-annet"}],
                 "metadata": {"fraogmed": "2025-01", "tilogmed": "2025-12"}},
            ]);
        });
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentResourceMismatch
        );
        // The right's metadata on the other right, which is for another resource.
        let token = with(|p| {
            element(p)["consentRights"][0]["metadata"] = json!({"fraogmed": "2025-01"});
            element(p)["consentRights"][1]["metadata"] =
                json!({"fraogmed": "2025-01", "tilogmed": "2025-12"});
        });
        assert_eq!(
            s.reason(&Req::bearer(&token)),
            Reason::ConsentMetadataMismatch
        );
    }

    #[test]
    fn a_second_element_never_supplies_what_the_first_lacks() {
        let s = Setup::person();
        // Element A: right subject, wrong resource. Element B: right resource,
        // another person. Together they would cover the request; alone neither.
        let token = with(|p| {
            let mut a = element(p).clone();
            a["id"] = json!("a");
            a["consentRights"][0]["resource"][0]["value"] = json!("demo-samtykke-annet");
            let mut b = element(p).clone();
            b["id"] = json!("b");
            b["from"] = json!("urn:altinn:person:identifier-no:01017012345");
            p["authorization_details"] = json!([a, b]);
        });
        let denied = s.run(&Req::bearer(&token)).unwrap_err();
        assert_eq!(
            denied.reason,
            Reason::ConsentSubjectMismatch,
            "B got furthest"
        );
        assert_eq!(denied.facts.consent_id.as_deref(), Some("b"));
        // Element A: expired; element B: for another consumer.
        let token = with(|p| {
            let mut a = element(p).clone();
            a["validTo"] = json!("2026-01-01T00:00:00Z");
            let mut b = element(p).clone();
            b["to"]["ID"] = json!("0192:999999999");
            p["authorization_details"] = json!([b, a]);
        });
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::ConsentExpired);
        // One good element among bad ones is enough.
        let token = with(|p| {
            let good = element(p).clone();
            let mut bad = good.clone();
            bad["id"] = json!("bad");
            bad["to"]["ID"] = json!("0192:999999999");
            p["authorization_details"] = json!([bad, good]);
        });
        assert_eq!(
            s.allows(&Req::bearer(&token)).consent.unwrap().id,
            "019ca7e2-5b1d-7c3a-9f42-6d0e81b3a5c7"
        );
    }

    // ---- trace ------------------------------------------------------------

    #[test]
    fn trace_lists_every_check_in_order_without_secrets() {
        let s = Setup::person();
        let token = sign(&person_payload());
        let mut trace = Vec::new();
        authorize(&s.ctx(), &Req::bearer(&token).view(), Some(&mut trace)).unwrap();
        let numbers: Vec<u8> = trace.iter().map(|c| c.number).collect();
        assert_eq!(numbers, (3..=21).collect::<Vec<u8>>());
        assert!(trace.iter().all(|c| c.passed));
        let text = format!("{trace:?}");
        assert!(!text.contains(FNR), "{text}");
        assert!(text.contains("178391*****"), "{text}");
        assert!(!text.contains(token.split('.').nth(2).unwrap()));
        assert!(!text.contains(token.split('.').next().unwrap()));

        let mut trace = Vec::new();
        let denied = authorize(
            &s.ctx(),
            &Req::bearer(&token).fnr("01017012345").view(),
            Some(&mut trace),
        )
        .unwrap_err();
        assert_eq!(denied.reason, Reason::ConsentSubjectMismatch);
        let last = trace.last().unwrap();
        assert_eq!((last.number, last.passed), (20, false));
        assert!(!format!("{trace:?}").contains("01017012345"));

        let mut trace = Vec::new();
        authorize(&s.ctx(), &Req::none().view(), Some(&mut trace)).unwrap_err();
        assert_eq!(trace.len(), 1);
        assert_eq!(
            (trace[0].number, trace[0].name, trace[0].passed),
            (3, "bearer_token", false)
        );
    }

    #[test]
    fn without_signature_is_for_explain_and_never_feeds_the_cache() {
        let s = Setup::person().with_cache();
        let forged = attacker().sign(&person_payload());
        let mut trace = Vec::new();
        let a =
            authorize_without_signature(&s.ctx(), &Req::bearer(&forged).view(), Some(&mut trace));
        assert!(a.is_ok());
        assert!(trace
            .iter()
            .any(|c| c.number == 9 && c.detail.contains("skipped")));
        assert_eq!(s.reason(&Req::bearer(&forged)), Reason::BadSignature);
    }

    // ---- cache ------------------------------------------------------------

    #[test]
    fn cache_hit_after_miss_still_runs_time_and_route_checks() {
        let mut s = Setup::person().with_cache();
        let token = sign(&person_payload());
        let first = s.allows(&Req::bearer(&token));
        assert_eq!((s.cache_count("miss"), s.cache_count("hit")), (1, 0));
        let second = s.allows(&Req::bearer(&token));
        assert_eq!((s.cache_count("miss"), s.cache_count("hit")), (1, 1));
        assert_eq!(first, second);
        // Route rules still apply on a hit.
        assert_eq!(
            s.reason(&Req::bearer(&token).fnr("01017012345")),
            Reason::ConsentSubjectMismatch
        );
        s.route.scopes.all = vec!["admin".into()];
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::InsufficientScope);
        s.route.scopes.all.clear();
        // Time checks still apply.
        s.now = NOW + 60.0 + LEEWAY;
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::TokenExpired);
        s.now = NOW;
        // The issuer must still be one of the route's.
        s.route.issuers = vec![1];
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::IssuerNotAllowed);
    }

    #[test]
    fn cache_entry_dies_with_its_key() {
        let s = Setup::person().with_cache();
        let token = sign(&person_payload());
        s.allows(&Req::bearer(&token));
        // Another key under the same kid: the cached verification is void.
        s.keys.set(vec![Some(key_set(attacker()))]);
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::BadSignature);
        // Cached again with the genuine key...
        s.keys.set(vec![Some(key_set(issuer()))]);
        s.allows(&Req::bearer(&token));
        let hits = s.cache_count("hit");
        s.allows(&Req::bearer(&token));
        assert_eq!(s.cache_count("hit"), hits + 1);
        // ...then the key leaves the set: unknown_key, even though cached.
        let other = DevIssuer::generate("other").unwrap();
        s.keys.set(vec![Some(key_set(&other))]);
        let denied = s.run(&Req::bearer(&token)).unwrap_err();
        assert_eq!(denied.reason, Reason::UnknownKey);
        assert_eq!(denied.refetch, Some((0, "mp-1".into())));
        // The genuine key back, parsed afresh: verified again (a miss), then cached.
        s.keys.set(vec![Some(key_set(issuer()))]);
        let misses = s.cache_count("miss");
        s.allows(&Req::bearer(&token));
        assert_eq!(s.cache_count("miss"), misses + 1);
        let hits = s.cache_count("hit");
        s.allows(&Req::bearer(&token));
        assert_eq!(s.cache_count("hit"), hits + 1);
    }

    /// The check-9 outcome of one call, with its detail.
    fn signature_check(s: &Setup, token: &str) -> (bool, String) {
        let mut trace = Vec::new();
        let _ = authorize(&s.ctx(), &Req::bearer(token).view(), Some(&mut trace));
        let nine = trace.iter().find(|c| c.number == 9).expect("check 9 ran");
        (nine.passed, nine.detail.clone())
    }

    #[test]
    fn a_repeated_forged_token_is_refused_without_verifying_again() {
        let s = Setup::person().with_cache();
        // The genuine claims and kid, signed with another key.
        let forged = attacker().sign(&person_payload());
        let (passed, detail) = signature_check(&s, &forged);
        assert!(!passed);
        assert!(detail.contains("does not verify"), "{detail}");
        let (passed, detail) = signature_check(&s, &forged);
        assert!(!passed);
        assert!(detail.contains("earlier (cache)"), "{detail}");
        assert_eq!(s.reason(&Req::bearer(&forged)), Reason::BadSignature);
        // Never counted as a hit of the verified-token cache.
        assert_eq!(s.cache_count("hit"), 0);
        // The genuine token is unaffected.
        s.allows(&Req::bearer(&sign(&person_payload())));
    }

    #[test]
    fn a_remembered_refusal_still_runs_checks_5_to_8_first() {
        let mut s = Setup::person().with_cache();
        let forged = attacker().sign(&person_payload());
        assert_eq!(s.reason(&Req::bearer(&forged)), Reason::BadSignature);
        s.route.issuers = vec![1];
        assert_eq!(s.reason(&Req::bearer(&forged)), Reason::IssuerNotAllowed);
    }

    #[test]
    fn a_remembered_refusal_dies_with_its_key() {
        let s = Setup::person().with_cache();
        let token = sign(&person_payload());
        // The set holds another key under the token's kid: refused, remembered.
        s.keys.set(vec![Some(key_set(attacker()))]);
        assert_eq!(s.reason(&Req::bearer(&token)), Reason::BadSignature);
        assert!(signature_check(&s, &token).1.contains("earlier (cache)"));
        // The genuine key arrives under the same kid: verified afresh, allowed.
        s.keys.set(vec![Some(key_set(issuer()))]);
        let (passed, detail) = signature_check(&s, &token);
        assert!(passed, "{detail}");
        s.allows(&Req::bearer(&token));
    }

    #[test]
    fn cached_token_is_verified_again_under_a_new_key_object() {
        let s = Setup::person().with_cache();
        let token = sign(&person_payload());
        s.allows(&Req::bearer(&token));
        // The same key material parsed afresh (no previous set): another key
        // object. The cached entry holds no signature; the token's is decoded
        // again, verifies, and the entry is renewed under the new key.
        s.keys.set(vec![Some(key_set(issuer()))]);
        let (misses, hits) = (s.cache_count("miss"), s.cache_count("hit"));
        let again = s.allows(&Req::bearer(&token));
        assert_eq!(
            (s.cache_count("miss"), s.cache_count("hit")),
            (misses + 1, hits)
        );
        assert_eq!(again, s.allows(&Req::bearer(&token)));
        assert_eq!(s.cache_count("hit"), hits + 1);
        // A token that reuses the cached token's header and payload with
        // another signature is other bytes: parsed, verified, refused.
        let (header_b64, rest) = token.split_once('.').unwrap();
        let (payload_b64, _) = rest.split_once('.').unwrap();
        let text = |b64: &str| String::from_utf8(URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap();
        let forged = attacker().sign_raw(&text(header_b64), &text(payload_b64));
        assert!(forged.starts_with(&format!("{header_b64}.{payload_b64}.")));
        assert_ne!(forged, token);
        assert_eq!(s.reason(&Req::bearer(&forged)), Reason::BadSignature);
    }

    #[test]
    fn cache_keeps_an_unchanged_key_across_refreshes() {
        let s = Setup::person().with_cache();
        let token = sign(&person_payload());
        let first = key_set(issuer());
        s.keys.set(vec![Some(first.clone())]);
        s.allows(&Req::bearer(&token));
        let refreshed =
            KeySet::parse(issuer().jwks_json().as_bytes(), &[Alg::RS256], Some(&first)).unwrap();
        s.keys.set(vec![Some(Arc::new(refreshed))]);
        s.allows(&Req::bearer(&token));
        assert_eq!((s.cache_count("miss"), s.cache_count("hit")), (1, 1));
    }

    #[test]
    fn cache_never_serves_a_different_token() {
        let s = Setup::person().with_cache();
        let token = sign(&person_payload());
        s.allows(&Req::bearer(&token));
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x80;
        let same_prefix = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(s.reason(&Req::bearer(&same_prefix)), Reason::BadSignature);
        let truncated = &token[..token.len() - 1];
        assert_ne!(s.run(&Req::bearer(truncated)).map(|_| ()), Ok(()));
        // The genuine token is still served from the cache.
        let hits = s.cache_count("hit");
        s.allows(&Req::bearer(&token));
        assert_eq!(s.cache_count("hit"), hits + 1);
    }

    #[test]
    fn cache_does_not_outlive_exp() {
        let metrics = Metrics::new();
        let cache = TokenCache::new(10, &metrics);
        let token = sign(&person_payload());
        let parsed = Arc::new(ParsedToken::parse(&token).unwrap());
        let keys = key_set(issuer());
        let key = keys.get("mp-1").unwrap();
        cache.insert(
            &cache.key(&token),
            Arc::clone(&parsed),
            Arc::clone(key),
            NOW + 60.0,
            NOW,
        );
        assert!(cache.lookup(&cache.key(&token), NOW).is_some());
        assert!(cache.lookup(&cache.key(&token), NOW + 60.0).is_none());
        assert!(cache.lookup(&cache.key(&token[1..]), NOW).is_none());
        // Already expired: not stored at all.
        let old = with(|p| p["jti"] = json!("old"));
        cache.insert(&cache.key(&old), parsed, Arc::clone(key), NOW, NOW);
        assert!(cache.lookup(&cache.key(&old), NOW - 1.0).is_none());
    }

    // ---- property: no single-byte mutation of a valid token is allowed ----

    mod mutation {
        use super::*;
        use proptest::prelude::*;

        fn valid() -> &'static (String, Setup) {
            static VALID: OnceLock<(String, Setup)> = OnceLock::new();
            VALID.get_or_init(|| {
                let token = sign(&person_payload());
                let setup = Setup::person().with_cache();
                setup.allows(&Req::bearer(&token)); // warm the cache
                (token, setup)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn a_single_mutated_byte_is_never_allowed(index in any::<prop::sample::Index>(), delta in 1u8..=255) {
                let (token, setup) = valid();
                let mut bytes = token.clone().into_bytes();
                let i = index.index(bytes.len());
                bytes[i] ^= delta;
                let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ".as_slice(), &bytes].concat()) else {
                    return Ok(()); // not even a header value
                };
                let mut req = Req::none();
                req.headers.insert("authorization", value);
                prop_assert!(setup.run(&req).is_err());
            }
        }
    }
}
