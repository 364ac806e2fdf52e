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

/// What a [`consent_config`] holds beside its `income` route, each part YAML
/// text put in place as it is (empty: nothing).
#[derive(Default)]
pub struct Around<'a> {
    /// More keys of `server:`, indented two spaces.
    pub server: &'a str,
    /// More upstreams after `echo`.
    pub upstreams: &'a str,
    /// After `income`: further routes, then the other top-level sections.
    pub rest: &'a str,
}

/// A whole gateway.yaml template around a consent route: one thread on
/// `{listen}` with the admin listener on `{admin}` (then `around.server`),
/// the issuer `test` (`https://test.maskinporten.no/`, keys at `{jwks}`),
/// the upstream `echo` at `{upstream}` (then `around.upstreams`), and
/// `routes:` with `income` (from [`income_route`]) first and `around.rest`
/// after it.
pub fn consent_config(income: &str, around: Around) -> String {
    let Around {
        server,
        upstreams,
        rest,
    } = around;
    format!(
        r#"
server:
  listen: ["{{listen}}"]
  admin_listen: "{{admin}}"
  threads: 1
{server}issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{{jwks}}"
upstreams:
  - name: echo
    targets: ["{{upstream}}"]
{upstreams}routes:
{income}{rest}"#
    )
}

/// The consent route `income` on `/income/{fnr}`, scoped, with the year and
/// a marker bound to request headers (`inntektsaar` from `X-Income-Year`,
/// `marker` from `X-Marker`), both required.
pub fn income_bound_to_headers() -> String {
    income_route(
        "/income/{fnr}",
        true,
        &[
            ("inntektsaar", "{ header: X-Income-Year }"),
            ("marker", "{ header: X-Marker }"),
        ],
    )
}
