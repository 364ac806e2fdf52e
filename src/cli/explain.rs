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
use crate::policy::auth::{authorize, authorize_without_signature};
use crate::policy::routes::{host_without_port, normalize_path, RouteMatch, RouteTable};
use crate::policy::{AuthContext, CheckOutcome, KeySource, RequestView};

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
    let method = args.method.to_ascii_uppercase();
    let host = host_without_port(uri.authority().map_or("", |a| a.as_str()));
    let routes = match RouteTable::new(&config.routes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };

    println!("request: {method} {}", mask_identity_numbers(&args.url));
    let deny = |number: u8, name: &'static str, detail: String, reason: &str| {
        print_check(&CheckOutcome {
            number,
            name,
            passed: false,
            detail,
        });
        println!("decision: deny ({reason})");
        ExitCode::from(1)
    };
    let path = match normalize_path(uri.path()) {
        Ok(p) => p,
        Err(e) => {
            return deny(
                0,
                "well-formed request",
                format!("{e:?}"),
                "invalid_request",
            )
        }
    };
    print_check(&CheckOutcome {
        number: 0,
        name: "well-formed request",
        passed: true,
        detail: format!("normalised path {path}"),
    });
    let (route_index, params) = match routes.find(&host, &path, &method) {
        RouteMatch::Found { route, params } => (route, params),
        RouteMatch::MethodNotAllowed { route, allow } => {
            print_check(&CheckOutcome {
                number: 1,
                name: "route",
                passed: true,
                detail: config.routes[route].name.clone(),
            });
            return deny(
                2,
                "method",
                format!("allowed: {allow}"),
                "method_not_allowed",
            );
        }
        RouteMatch::NotFound => {
            return deny(1, "route", format!("no route for {host}{path}"), "no_route")
        }
    };
    let route = &config.routes[route_index];
    print_check(&CheckOutcome {
        number: 1,
        name: "route",
        passed: true,
        detail: format!("{} ({})", route.name, route.path),
    });
    print_check(&CheckOutcome {
        number: 2,
        name: "method",
        passed: true,
        detail: method.clone(),
    });

    let keys = if args.no_verify {
        FetchedKeys(vec![None; config.issuers.len()])
    } else {
        fetch_keys(&config)
    };
    let view = RequestView {
        headers: &headers,
        query: uri.query(),
        path_params: &params,
    };
    let auth_ctx = AuthContext {
        route: &route.auth,
        issuers: &config.issuers,
        max_token_bytes: config.server.max_token_bytes,
        keys: &keys,
        cache: None,
        now: SystemClock.now(),
    };
    let mut trace = Vec::new();
    let verdict = if args.no_verify {
        authorize_without_signature(&auth_ctx, &view, Some(&mut trace))
    } else {
        authorize(&auth_ctx, &view, Some(&mut trace))
    };
    let skip_line = "7-9  skip  signature                    --no-verify: keys not fetched, signature not checked";
    let mut skip_pending =
        args.no_verify && trace.last().is_some_and(|c| c.number >= 6 && c.passed);
    if trace.is_empty() && route.auth.mode == crate::config::AuthMode::None {
        println!("  3-21 skip  auth: none                   token and consent checks skipped");
    }
    for c in &trace {
        if skip_pending && c.number > 9 {
            println!("{skip_line}");
            skip_pending = false;
        }
        print_check(c);
    }
    if skip_pending {
        println!("{skip_line}");
    }
    match verdict {
        Ok(_) => {
            println!("decision: allow (route {})", route.name);
            ExitCode::SUCCESS
        }
        Err(denied) => {
            println!("decision: deny ({})", denied.reason.code());
            ExitCode::from(1)
        }
    }
}
