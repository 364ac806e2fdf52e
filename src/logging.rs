//! The operational log on stderr (SPEC section 13): text or JSON lines, and
//! redaction at the source so no level prints a token, a national identity
//! number or a bound header value unless `--log-personal-data` is given.
//!
//! Two layers: (1) the libraries below the gateway (pingora, h2, hyper,
//! rustls, reqwest) print whole request and response headers and bodies at
//! `debug` and `trace`, so their lines above `info` are dropped; (2) every
//! line that remains is scrubbed of JWT-shaped strings, `Bearer` credentials
//! and eleven-digit runs (a national identity number's shape).

use std::io::{IsTerminal, Write};

use log::{Level, Log, Metadata, Record};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `text` | `json`; `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The default: `text` when stderr is a terminal, else `json`.
    pub fn default_for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Text
        } else {
            Self::Json
        }
    }
}

/// What the logger is set up with.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `env_logger`-style filter directives (`info`, `consent_gateway=debug`).
    pub filters: String,
    pub format: LogFormat,
    /// `--log-personal-data`: no redaction (local debugging only).
    pub personal_data: bool,
}

/// The log targets of our own code; every other target is a library's.
const OWN_TARGET: &str = "consent_gateway";

struct Logger {
    filter: env_filter::Filter,
    format: LogFormat,
    personal_data: bool,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata) && (self.personal_data || library_level_ok(metadata))
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) || !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let message = if self.personal_data {
            message
        } else {
            redact(&message)
        };
        let line = render(
            self.format,
            chrono::Utc::now(),
            record.level(),
            record.target(),
            &message,
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Libraries' lines pass up to `info`: their `debug` and `trace` lines print
/// whole headers (the token, bound values) and bodies.
fn library_level_ok(metadata: &Metadata<'_>) -> bool {
    metadata.level() <= Level::Info
        || metadata.target() == OWN_TARGET
        || metadata.target().starts_with("consent_gateway::")
}

/// One rendered line, ending in `\n`.
fn render(
    format: LogFormat,
    ts: chrono::DateTime<chrono::Utc>,
    level: Level,
    target: &str,
    message: &str,
) -> String {
    let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match format {
        LogFormat::Text => format!("{ts} {level:<5} {target}: {message}\n"),
        LogFormat::Json => {
            let value = serde_json::json!({
                "ts": ts,
                "level": level.as_str().to_ascii_lowercase(),
                "target": target,
                "message": message,
            });
            format!("{value}\n")
        }
    }
}

/// Installs the logger; a warning is logged when personal data is let through.
pub fn init(settings: &LogSettings) {
    let filter = env_filter::Builder::new().parse(&settings.filters).build();
    let max = filter.filter();
    let logger = Logger {
        filter,
        format: settings.format,
        personal_data: settings.personal_data,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
    if settings.personal_data {
        log::warn!(
            "--log-personal-data: logs may contain tokens, national identity numbers and \
             bound header values in clear; for local debugging only"
        );
    }
}

/// Replaces JWT-shaped strings, `Bearer` credentials and eleven-digit runs.
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !is_token_byte(bytes[i - 1]);
        if starts_word && bytes[i..].starts_with(b"eyJ") {
            let end = token_end(bytes, i);
            if bytes[i..end].iter().filter(|b| **b == b'.').count() >= 1 {
                out.push_str(&text[copied..i]);
                out.push_str("[token]");
                i = end;
                copied = end;
                continue;
            }
        }
        if starts_word && bytes[i..].len() >= 7 && bytes[i..i + 7].eq_ignore_ascii_case(b"bearer ")
        {
            let start = i + 7;
            let end = token_end(bytes, start);
            if end > start {
                out.push_str(&text[copied..start]);
                out.push_str("[token]");
                i = end;
                copied = end;
                continue;
            }
        }
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit()) {
            let end = i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            if end - i == 11 {
                out.push_str(&text[copied..i]);
                out.push_str("[redacted]");
                copied = end;
            }
            i = end;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'+' | b'/' | b'~')
}

fn token_end(bytes: &[u8], from: usize) -> usize {
    from + bytes[from..]
        .iter()
        .take_while(|b| is_token_byte(**b))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens_bearers_and_identity_numbers() {
        let text = "auth Bearer abc.def-ghi x eyJhbGciOi.eyJzdWIi.sig9_- fnr=17839116535 \
                    ts=1764700000123 org=310497460";
        let out = redact(text);
        assert!(!out.contains("abc.def"), "{out}");
        assert!(!out.contains("eyJhbGciOi"), "{out}");
        assert!(!out.contains("17839116535"), "{out}");
        assert!(out.contains("ts=1764700000123"), "{out}");
        assert!(out.contains("org=310497460"), "{out}");
        assert_eq!(redact("plain words"), "plain words");
        assert_eq!(redact("ÆØÅ 12345678901 æ"), "ÆØÅ [redacted] æ");
    }

    #[test]
    fn json_lines_have_the_fields() {
        let ts = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let line = render(LogFormat::Json, ts, Level::Warn, "pingora_core", "hi \"x\"");
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["target"], "pingora_core");
        assert_eq!(v["message"], "hi \"x\"");
        let text = render(LogFormat::Text, ts, Level::Info, "t", "m");
        assert_eq!(text, "1970-01-01T00:00:00.000Z INFO  t: m\n");
    }

    #[test]
    fn library_debug_lines_are_dropped() {
        let lib = Metadata::builder()
            .level(Level::Debug)
            .target("pingora_proxy::proxy_h1")
            .build();
        assert!(!library_level_ok(&lib));
        let own = Metadata::builder()
            .level(Level::Trace)
            .target("consent_gateway::keys::cache")
            .build();
        assert!(library_level_ok(&own));
        let info = Metadata::builder()
            .level(Level::Info)
            .target("pingora_core")
            .build();
        assert!(library_level_ok(&info));
    }
}
