//! `consent-gateway token`: mint a signed test token from a PEM key, for
//! development issuers only. Prints the compact token alone on stdout, or
//! with `--print-jwks` the JWKS of the key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::dev_issuer::{DevIssuer, TokenSpec};

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// RSA private key, PKCS#1 or PKCS#8 PEM.
    #[arg(long, value_name = "FILE.pem")]
    pub key: PathBuf,
    /// Key id for the JOSE header.
    #[arg(long, default_value = "dev")]
    pub kid: String,
    /// Issuer (`iss`).
    #[arg(long, default_value = "https://test.maskinporten.no/")]
    pub iss: String,
    /// Space-separated scopes.
    #[arg(long, default_value = "demo:inntekt.read")]
    pub scope: String,
    /// Consumer organisation, `0192:<orgnr>` or a bare 9-digit number.
    #[arg(long, default_value = "0192:310497460")]
    pub consumer: String,
    /// Supplier organisation acting for the consumer.
    #[arg(long)]
    pub supplier: Option<String>,
    /// Data subject: a URN, or a bare 11-digit (person) or 9-digit (organisation) number.
    #[arg(long)]
    pub from: Option<String>,
    /// The consent's resource (`urn:altinn:resource` value).
    #[arg(long)]
    pub resource: Option<String>,
    /// Metadata of the consent right, `key=value` (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// When the consent ends (RFC 3339).
    #[arg(long)]
    pub valid_to: Option<String>,
    /// Token lifetime (e.g. 120s, 5m).
    #[arg(long, default_value = "120s")]
    pub ttl: String,
    /// Print the JWKS (public key) of --key, for a `jwks_file:` issuer, instead of a token.
    #[arg(long)]
    pub print_jwks: bool,
}

fn org(id: &str) -> String {
    if id.contains(':') {
        id.to_string()
    } else {
        format!("0192:{id}")
    }
}

/// Builds the token spec from the flags (pure; tested).
pub fn spec(args: &TokenArgs) -> Result<TokenSpec, String> {
    let ttl = humantime::parse_duration(&args.ttl).map_err(|e| format!("--ttl: {e}"))?;
    if let Some(v) = &args.valid_to {
        chrono::DateTime::parse_from_rfc3339(v).map_err(|e| format!("--valid-to: {e}"))?;
    }
    if let Some(from) = &args.from {
        let bare_ok =
            (from.len() == 11 || from.len() == 9) && from.bytes().all(|b| b.is_ascii_digit());
        if !from.starts_with("urn:") && !bare_ok {
            return Err("--from takes a URN or a bare 11-digit or 9-digit number".into());
        }
    }
    let metadata = args
        .metadata
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--metadata {kv:?}: expected key=value"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TokenSpec {
        iss: args.iss.clone(),
        scope: args.scope.clone(),
        consumer: org(&args.consumer),
        supplier: args.supplier.as_deref().map(org),
        from: args.from.clone(),
        resource: args.resource.clone(),
        metadata,
        valid_to: args.valid_to.clone(),
        ttl_seconds: ttl.as_secs(),
    })
}

pub fn run(args: &TokenArgs) -> ExitCode {
    let result = (|| {
        let spec = spec(args)?;
        let pem = std::fs::read(&args.key).map_err(|e| format!("{}: {e}", args.key.display()))?;
        let issuer = DevIssuer::from_pem(&args.kid, &pem).map_err(|e| e.to_string())?;
        if args.print_jwks {
            return Ok(issuer.jwks_json());
        }
        let now = chrono::Utc::now().timestamp();
        Ok::<String, String>(issuer.sign(&spec.claims(now)))
    })();
    match result {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("token: {e}");
            ExitCode::from(2)
        }
    }
}
