//! `consent-gateway explain`: evaluates one request offline against a
//! configuration and prints every check in order with pass/fail, then the
//! decision and reason. Exit 0 on allow, 1 on deny, 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::keys::fetch::http_fetcher_for;
use crate::keys::KeySet;
use crate::policy::body::RequestBody;
use crate::policy::routes::RouteTable;
use crate::policy::{decide, CheckOutcome, Checking, Generation, KeySource, RequestFacts, Verdict};

#[cfg(test)]
mod tests {
    #[test]
    fn masks_only_eleven_digit_runs() {
        assert_eq!(
            super::mask_identity_numbers("/income/17839116535/2025?org=310497460"),
            "/income/178391*****/2025?org=310497460"
        );
        assert_eq!(super::mask_identity_numbers("123456789012"), "123456789012");
    }
}

#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// The request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The request URL, e.g. http://api.example.no/income/17839116535/2025
    #[arg(long)]
    pub url: String,
    /// The bearer token (without `Bearer `).
    #[arg(long)]
    pub token: Option<String>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The request body, for routes whose `subject` or `metadata.match`
    /// read it (`body: { json_pointer | form_field }`); give its
    /// `Content-Type` with `-H`.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// Do not fetch the JWKS: the signature checks (7-9) are skipped and
    /// reported as such.
    #[arg(long)]
    pub no_verify: bool,
}

struct FetchedKeys(Vec<Option<Arc<KeySet>>>);

impl KeySource for FetchedKeys {
    fn keys(&self, issuer: usize) -> Option<Arc<KeySet>> {
        self.0.get(issuer).cloned().flatten()
    }
}

fn fetch_keys(config: &Config) -> FetchedKeys {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return FetchedKeys(vec![None; config.issuers.len()]);
    };
    FetchedKeys(
        config
            .issuers
            .iter()
            .map(|issuer| {
                let fetcher = http_fetcher_for(issuer);
                match runtime.block_on(fetcher.fetch()) {
                    Ok(body) => match KeySet::parse(&body, &issuer.algorithms, None) {
                        Ok(set) => Some(Arc::new(set)),
                        Err(e) => {
                            eprintln!("issuer {}: JWKS rejected: {e}", issuer.name);
                            None
                        }
                    },
                    Err(e) => {
                        eprintln!("issuer {}: JWKS fetch failed: {e}", issuer.name);
                        None
                    }
                }
            })
            .collect(),
    )
}

/// Masks every run of exactly 11 digits (a national identity number) as
/// `259229*****`, so the printed URL and path hold no identity in clear.
fn mask_identity_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() == 11 {
            out.push_str(&crate::policy::consent::mask(digits));
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
        } else {
            flush(&mut digits, &mut out);
            out.push(ch);
        }
    }
    flush(&mut digits, &mut out);
    out
}

fn print_check(c: &CheckOutcome) {
    println!(
        "{:>3}  {:<5} {:<28} {}",
        c.number,
        if c.passed { "pass" } else { "FAIL" },
        c.name,
        mask_identity_numbers(&c.detail)
    );
}

pub fn run(args: &ExplainArgs) -> ExitCode {
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let uri: http::Uri = match args.url.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("--url: {e}");
            return ExitCode::from(2);
        }
    };
    let mut headers = http::HeaderMap::new();
    for h in &args.headers {
        let parsed = h.split_once(':').and_then(|(n, v)| {
            Some((
                http::HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                http::HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        match parsed {
            Some((n, v)) => {
                headers.append(n, v);
            }
            None => {
                eprintln!("--header {h:?}: expected 'Name: value'");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(token) = &args.token {
        match http::HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(v) => {
                headers.insert(http::header::AUTHORIZATION, v);
            }
            Err(_) => {
                eprintln!("--token: not a valid header value");
                return ExitCode::from(2);
            }
        }
    }
    let Ok(method) = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()) else {
        eprintln!("--method {:?}: not an HTTP method", args.method);
        return ExitCode::from(2);
    };
    // As curl sends it: the URL's authority as `Host` unless `-H Host` is given.
    if let Some(authority) = uri.authority() {
        if !headers.contains_key(http::header::HOST) {
            match http::HeaderValue::from_str(authority.as_str()) {
                Ok(v) => {
                    headers.insert(http::header::HOST, v);
                }
                Err(_) => {
                    eprintln!("--url: the authority is not a valid Host");
                    return ExitCode::from(2);
                }
            }
        }
    }
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let routes = match RouteTable::new(&config.routes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let keys = if args.no_verify {
        FetchedKeys(vec![None; config.issuers.len()])
    } else {
        fetch_keys(&config)
    };
    let body = match &args.body {
        None => Vec::new(),
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("--body {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let mut facts = RequestFacts {
        method: &method,
        version: http::Version::HTTP_11,
        target: target.as_bytes(),
        authority: None,
        headers: &headers,
        body: None,
    };
    let generation = Generation {
        config: &config,
        routes: &routes,
        keys: &keys,
    };
    let checking = Checking {
        now: SystemClock.now(),
        cache: None,
        verify_signature: !args.no_verify,
        // The keys were fetched just now: a refetch would fetch the same.
        may_refetch: false,
    };
    let mut trace = Vec::new();
    let mut verdict = decide(&facts, &generation, &checking, Some(&mut trace));
    if let Verdict::NeedBody { .. } = verdict {
        // As the proxy does: the route binds the body, so it is read (an
        // absent `--body` is an empty one) and the request decided again.
        facts.body = Some(RequestBody::Complete(&body));
        trace.clear();
        verdict = decide(&facts, &generation, &checking, Some(&mut trace));
    }

    println!("request: {method} {}", mask_identity_numbers(&args.url));
    print_trace(&trace, &verdict, &config);
    match verdict {
        Verdict::Allow { routed, .. } => {
            println!(
                "decision: allow (route {})",
                config.routes[routed.route].name
            );
            ExitCode::SUCCESS
        }
        Verdict::ShadowDeny { routed, denied } => {
            println!(
                "decision: shadow_deny ({}; route {} is report_only: forwarded anyway)",
                denied.reason.code(),
                config.routes[routed.route].name
            );
            ExitCode::from(1)
        }
        other => {
            let code = other.reason().map_or("unknown_key", |r| r.code());
            println!("decision: deny ({code})");
            ExitCode::from(1)
        }
    }
}

/// Prints every check in order (checks 7-9 say when `--no-verify` skipped
/// them), and the `auth: none` skip where it falls.
fn print_trace(trace: &[CheckOutcome], verdict: &Verdict, config: &Config) {
    for c in trace {
        print_check(c);
    }
    if let Verdict::Allow { routed, .. } = verdict {
        if config.routes[routed.route].auth.mode == crate::config::AuthMode::None {
            println!("  3-21 skip  auth: none                   token and consent checks skipped");
        }
    }
}
