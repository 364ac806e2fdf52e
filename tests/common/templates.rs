//! gateway.yaml templates that several test files share, with the
//! placeholders [`super::World::render`] fills (`{listen}`, `{admin}`,
//! `{jwks}`, `{upstream}`, `{upstream2}`); a caller's own placeholders (in
//! `rest`) pass through untouched.

/// The consent route `income` as the tests write it: `GET` on `path` (which
/// names `{fnr}`), upstream `echo`, issuer `test`, the scope
/// `demo:inntekt.read` when `scoped`, the resource `demo-samtykke-inntekt`,
/// the subject the path's `fnr`, and each `(name, binding)` of `metadata`
/// required and matched (the binding in YAML flow style, as
/// `{ path_param: year }`; none: no `metadata` block).
pub fn income_route(path: &str, scoped: bool, metadata: &[(&str, &str)]) -> String {
    let mut route = format!(
        "  - name: income\n    path: {path}\n    methods: [GET]\n    upstream: echo\n    issuers: [test]\n"
    );
    if scoped {
        route.push_str("    scopes:\n      all: [\"demo:inntekt.read\"]\n");
    }
    route.push_str(
        "    consent:\n      resources: [\"demo-samtykke-inntekt\"]\n      subject:\n        path_param: fnr\n",
    );
    if !metadata.is_empty() {
        let names: Vec<&str> = metadata.iter().map(|(name, _)| *name).collect();
        route.push_str(&format!(
            "      metadata:\n        required: [{}]\n        match:\n",
            names.join(", ")
        ));
        for (name, binding) in metadata {
            route.push_str(&format!("          {name}: {binding}\n"));
        }
    }
    route
}

/// A whole gateway.yaml template around a consent route: one thread on
/// `{listen}` with the admin listener on `{admin}`, the issuer `test`
/// (`https://test.maskinporten.no/`, keys at `{jwks}`), the upstream `echo`
/// at `{upstream}` and then `more_upstreams`, and `routes:` with `income`
/// (from [`income_route`]) first and `rest` after it: further routes, then
/// the other top-level sections.
pub fn consent_config(income: &str, more_upstreams: &str, rest: &str) -> String {
    format!(
        r#"
server:
  listen: ["{{listen}}"]
  admin_listen: "{{admin}}"
  threads: 1
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{{jwks}}"
upstreams:
  - name: echo
    targets: ["{{upstream}}"]
{more_upstreams}routes:
{income}{rest}"#
    )
}

/// `metadata` for [`income_route`]: the year and a marker, both bound to
/// request headers (`X-Income-Year`, `X-Marker`).
pub const YEAR_AND_MARKER_FROM_HEADERS: &[(&str, &str)] = &[
    ("inntektsaar", "{ header: X-Income-Year }"),
    ("marker", "{ header: X-Marker }"),
];
