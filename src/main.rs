//! The `consent-gateway` command line: run / check / demo / token / explain / docs.
//! Wiring only; the work is done in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use consent_gateway::{cli, config, logging};

/// The request path allocates many small header names and values: mimalloc
/// serves them at a fraction of glibc malloc's cost (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "consent-gateway",
    version,
    about = "A reverse proxy that enforces Altinn 3 consent in Maskinporten tokens"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (or set CONSENT_GATEWAY_LOG to filter directives).
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Operational log format on stderr: text or json (default: text on a terminal, else json).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Let tokens, national identity numbers and bound values into the operational log
    /// (local debugging only; a warning is logged at start).
    #[arg(long, global = true)]
    log_personal_data: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone, Default)]
struct ConfigArg {
    /// The configuration file (default: $CONSENT_GATEWAY_CONFIG, else ./gateway.yaml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("CONSENT_GATEWAY_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("gateway.yaml"))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the configuration (the default when no verb is given).
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Take over the listeners of a running instance (then send it SIGQUIT).
        #[arg(long)]
        upgrade: bool,
        /// Socket used to hand listeners over during --upgrade.
        #[arg(long, value_name = "PATH")]
        upgrade_sock: Option<String>,
        /// Seconds to finish in-flight requests after SIGTERM.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        grace_period: u64,
    },
    /// Validate the configuration and every file it names; print a summary.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// A self-contained demonstration on loopback: issuer, upstream, route.
    Demo(cli::demo::DemoArgs),
    /// Mint a signed test token (development issuers only).
    Token(cli::token::TokenArgs),
    /// Evaluate one request offline and print every check in order.
    Explain(cli::explain::ExplainArgs),
    /// Write the consumer documentation of the configuration (no network).
    Docs {
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t = cli::docs::DocsFormat::Markdown)]
        format: cli::docs::DocsFormat,
    },
}

fn init_logging(level: Option<&str>, format: logging::LogFormat, personal_data: bool) {
    let filters = match (level, std::env::var("CONSENT_GATEWAY_LOG")) {
        (Some(level), _) => level.to_string(),
        (None, Ok(filters)) => filters,
        (None, Err(_)) => "info".to_string(),
    };
    logging::init(&logging::LogSettings {
        filters,
        format,
        personal_data,
    });
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Some(level) = &cli.log_level {
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            eprintln!("--log-level must be one of error, warn, info, debug, trace");
            return ExitCode::from(2);
        }
    }
    let format = match cli.log_format.as_deref() {
        None => logging::LogFormat::default_for_stderr(),
        Some(value) => match logging::LogFormat::parse(value) {
            Some(format) => format,
            None => {
                eprintln!("--log-format must be text or json");
                return ExitCode::from(2);
            }
        },
    };
    init_logging(cli.log_level.as_deref(), format, cli.log_personal_data);
    let command = cli.command.unwrap_or(Command::Run {
        config: ConfigArg::default(),
        upgrade: false,
        upgrade_sock: None,
        grace_period: 10,
    });
    match command {
        Command::Run {
            config,
            upgrade,
            upgrade_sock,
            grace_period,
        } => {
            let options = consent_gateway::server::RunOptions {
                upgrade,
                upgrade_sock,
                grace_period_seconds: grace_period,
            };
            cli::run::run(&config.path(), &options)
        }
        Command::Check { config } => {
            let path = config.path();
            match config::load(&path) {
                Ok(config) => {
                    println!("{}", config::summary(&config));
                    for warning in config::warnings(&config) {
                        println!("warning: {warning}");
                    }
                    println!("{}: configuration is valid", path.display());
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{}: configuration is invalid", path.display());
                    ExitCode::from(1)
                }
            }
        }
        Command::Demo(args) => cli::demo::run(&args),
        Command::Token(args) => cli::token::run(&args),
        Command::Explain(args) => cli::explain::run(&args),
        Command::Docs { config, format } => cli::docs::run(&config.path(), format),
    }
}
