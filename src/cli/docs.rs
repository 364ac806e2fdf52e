//! `consent-gateway docs`: the consumer documentation of a configuration
//! (SPEC 13), from the file alone, written to stdout.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;

use crate::config;
use crate::docs::{self, Format};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum DocsFormat {
    /// Markdown, for a repository or a wiki.
    #[default]
    Markdown,
    /// One self-contained HTML page to publish.
    Html,
    /// An OpenAPI 3.1 document (JSON).
    Openapi,
}

impl From<DocsFormat> for Format {
    fn from(format: DocsFormat) -> Format {
        match format {
            DocsFormat::Markdown => Format::Markdown,
            DocsFormat::Html => Format::Html,
            DocsFormat::Openapi => Format::Openapi,
        }
    }
}

/// Loads and validates the config at `path` (no network), then prints its
/// documentation; an invalid config prints every error and exits 1.
pub fn run(path: &Path, format: DocsFormat) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            print!("{}", docs::render(&config, format.into()));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: configuration is invalid", path.display());
            ExitCode::from(1)
        }
    }
}
