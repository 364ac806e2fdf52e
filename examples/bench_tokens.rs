//! Writes the key files and tokens the load comparison
//! (`benches/load/compare.sh`) needs, from one development issuer:
//!
//! - `private.pem` (PKCS#8), `public.pem` (SubjectPublicKeyInfo, for HAProxy's
//!   `jwt_verify`), `jwks.json` (for the gateway's `jwks_uri`);
//! - `token.txt`: one valid RS256 consent token (reused by every request);
//! - `tokens.txt`: `--count` distinct valid tokens, one a line;
//! - `forged.txt`: a token with the same claims and `kid`, signed by another
//!   key (a `bad_signature` deny);
//! - `consent-tokens.txt` (with `--consent-count N`): the consent workload,
//!   N lines `<fnr> <token>`, each token for a different data subject (as a
//!   consumer holding one consent per person has), so a request for person
//!   `fnr` goes to `/income/<fnr>/<year>`.
//!
//! ```text
//! cargo run --release --example bench_tokens -- --out DIR --count 150000
//! ```
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use clap::Parser;

use consent_gateway::dev_issuer::{DevIssuer, TokenSpec};

#[derive(Parser)]
#[command(about = "Key files and tokens for the load comparison")]
struct Args {
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of distinct valid tokens in tokens.txt.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Key id.
    #[arg(long, default_value = "bench-1")]
    kid: String,
    /// Token lifetime in seconds (exp - iat).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// The data subject of the consent (the `{fnr}` of the consent route).
    #[arg(long, default_value = "17839116535")]
    from: String,
    /// The consent right's `inntektsaar` metadata (the `{year}` of the route).
    #[arg(long, default_value = "2025")]
    year: String,
    /// Number of tokens in consent-tokens.txt, one data subject each (0: none).
    #[arg(long, default_value_t = 0)]
    consent_count: usize,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn issuer(kid: &str) -> Result<(DevIssuer, KeyPair), String> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| e.to_string())?;
    let der = AsDer::<Pkcs8V1Der>::as_der(&pair).map_err(|e| e.to_string())?;
    let dev = DevIssuer::from_pem(kid, pem("PRIVATE KEY", der.as_ref()).as_bytes())
        .map_err(|e| e.to_string())?;
    Ok((dev, pair))
}

fn run(args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let (dev, pair) = issuer(&args.kid)?;
    let (attacker, _) = issuer(&args.kid)?;
    write(&args.out.join("private.pem"), dev.private_pem())?;
    let public = AsDer::<PublicKeyX509Der>::as_der(pair.public_key()).map_err(|e| e.to_string())?;
    write(
        &args.out.join("public.pem"),
        &pem("PUBLIC KEY", public.as_ref()),
    )?;
    let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    let jwks = serde_json::json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": args.kid,
        "n": URL_SAFE_NO_PAD.encode(&components.n),
        "e": URL_SAFE_NO_PAD.encode(&components.e),
    }]});
    write(&args.out.join("jwks.json"), &jwks.to_string())?;

    let spec = TokenSpec {
        from: Some(args.from.clone()),
        resource: Some("demo-samtykke-inntekt".into()),
        metadata: vec![("inntektsaar".into(), args.year.clone())],
        ttl_seconds: args.ttl,
        ..TokenSpec::default()
    };
    let now = chrono::Utc::now().timestamp();
    // Each call draws a fresh jti, client_id and consent id: distinct tokens.
    write(
        &args.out.join("token.txt"),
        &(dev.sign(&spec.claims(now)) + "\n"),
    )?;
    write(
        &args.out.join("forged.txt"),
        &(attacker.sign(&spec.claims(now)) + "\n"),
    )?;

    write_parallel(&args.out.join("tokens.txt"), args.count, |_| {
        dev.sign(&spec.claims(now))
    })?;
    if args.consent_count > 0 {
        write_parallel(
            &args.out.join("consent-tokens.txt"),
            args.consent_count,
            |i| {
                let fnr = subject(i);
                let spec = TokenSpec {
                    from: Some(fnr.clone()),
                    ..spec.clone()
                };
                format!("{fnr} {}", dev.sign(&spec.claims(now)))
            },
        )?;
    }
    Ok(())
}

/// The `i`-th data subject of the consent workload: a distinct 11-digit
/// person number (the gateway checks the form, not a national register).
fn subject(i: usize) -> String {
    format!("{:011}", 10_000_000_000u64 + i as u64)
}

/// Writes `count` lines `line(i)` to `path`, signing on every core.
fn write_parallel(
    path: &Path,
    count: usize,
    line: impl Fn(usize) -> String + Sync,
) -> Result<(), String> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_worker = count.div_ceil(workers);
    let chunks: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let line = &line;
                let first = w * per_worker;
                let n = per_worker.min(count.saturating_sub(first));
                scope.spawn(move || {
                    let mut text = String::new();
                    for i in first..first + n {
                        text.push_str(&line(i));
                        text.push('\n');
                    }
                    text
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for chunk in chunks {
        file.write_all(chunk.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_tokens: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
