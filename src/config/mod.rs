//! `gateway.yaml` -> validated, compiled configuration (pure: files are read,
//! nothing is fetched).
//!
//! - `raw`: the serde mirror of the file (every key and default).
//! - `validate`: every cross-check, all errors at once, with field paths.
//! - `compile`: raw -> the runtime `model` the gateway runs on.
//! - `orgno`: organisation numbers and access-list files.
//! - `locate`: the line of a field path in the YAML text (for errors).
//! - `summary`: the one-screen summary printed by `consent-gateway check`.

pub mod compile;
pub mod env;
pub mod locate;
pub mod model;
pub mod orgno;
pub mod raw;
pub mod shape;
pub mod summary;
pub mod validate;

pub use model::*;
pub use orgno::{is_valid_orgnr, normalize_org_entry, parse_access_list};
pub use summary::{summary, warnings};
pub use validate::{FileSource, Fs};

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a configuration: where (file, line, column when
/// known, and the field path such as `routes[2].consent.subject.path_param`)
/// and what. Displayed as `file:line:col: path: message`, leaving out what
/// is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file, or the access-list file an entry error is in.
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based.
    pub column: Option<usize>,
    /// The field path; empty for the document as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error of a configuration that did not load, in file order of discovery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn one(file: &Path, message: String) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            path: String::new(),
            message,
        }])
    }
}

/// Reads, validates and compiles the config at `path` and every file it
/// names (access lists; certificate, key and CA files are checked readable).
/// No network I/O. Relative paths in it are relative to its directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigErrors::one(path, format!("cannot read the config file: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigErrors::one(path, "the config file is not UTF-8 text".to_string()))?;
    load_with(&text, path, &Fs)
}

/// As `load`, for config text already in hand; `file` names it in errors
/// and its parent directory is the base of relative paths.
pub fn load_str(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    load_with(text, file, &Fs)
}

/// As `load_str`, reading the files the config names through `files`.
pub fn load_with(text: &str, file: &Path, files: &dyn FileSource) -> Result<Config, ConfigErrors> {
    let raw = if text.contains("${") {
        parse_with_env(text, file, &|name| std::env::var(name).ok())
            .map_err(|errors| with_lines(errors, text, file))?
    } else {
        parse(text, file).map_err(|first| {
            let errors = match serde_yaml::from_str::<serde_yaml::Value>(text) {
                Ok(value) => with_shape_errors(first, &value, file),
                Err(_) => vec![first],
            };
            with_lines(errors, text, file)
        })?
    };
    let base_dir = file.parent().unwrap_or(Path::new(""));
    let ctx = validate::Context {
        config_file: file,
        base_dir,
        files,
    };
    let checked =
        validate::validate(&raw, &ctx).map_err(|errors| with_lines(errors, text, file))?;
    compile::compile(&raw, text.as_bytes(), &checked, &ctx)
        .map_err(|errors| with_lines(errors, text, file))
}

/// Parses the YAML into the raw mirror; a syntax error, unknown key, wrong
/// type or bad duration is reported with its line, column and field path.
pub fn parse(text: &str, file: &Path) -> Result<raw::RawConfig, ConfigError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = error.into_inner();
        let location = inner.location();
        ConfigError {
            file: file.to_path_buf(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message: yaml_message(&inner.to_string(), &path),
            path,
        }
    })
}

/// As `parse`, with `${ENV_NAME}` in values replaced first (`env.rs`):
/// every unset variable is reported at once, by field path (the caller
/// adds lines from the text).
pub fn parse_with_env(
    text: &str,
    file: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<raw::RawConfig, Vec<ConfigError>> {
    let mut value: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        // A syntax error: `parse` reports it with its location.
        Err(_) => return parse(text, file).map_err(|e| vec![e]),
    };
    let problems = env::substitute(&mut value, lookup);
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .map(|(path, message)| ConfigError {
                file: file.to_path_buf(),
                line: None,
                column: None,
                path,
                message,
            })
            .collect());
    }
    serde_path_to_error::deserialize(value.clone()).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = error.into_inner();
        let first = ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: yaml_message(&inner.to_string(), &path),
            path,
        };
        with_shape_errors(first, &value, file)
    })
}

/// The first shape error serde found, and one for every other broken
/// section or list item (`shape.rs`), so that all come in one run.
fn with_shape_errors(
    first: ConfigError,
    value: &serde_yaml::Value,
    file: &Path,
) -> Vec<ConfigError> {
    let first_item = shape::item_of(&first.path).to_string();
    let mut errors = vec![first];
    for (path, message) in shape::errors(value) {
        if shape::item_of(&path) == first_item || errors.iter().any(|e| e.path == path) {
            continue;
        }
        errors.push(ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            path,
            message,
        });
    }
    errors
}

/// serde_yaml's message without the location and path it appends and
/// prepends (they are reported in their own fields).
fn yaml_message(display: &str, path: &str) -> String {
    let mut message = display;
    if let Some(at) = message.find(" at line ") {
        let tail = &message[at + " at line ".len()..];
        let is_location = tail.split_once(" column ").is_some_and(|(l, c)| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_digit())
                && c.bytes().take_while(u8::is_ascii_digit).count() > 0
        });
        if is_location && !tail.contains(", ") {
            message = &message[..at];
        }
    }
    // serde_yaml names the enclosing mapping; the path (which may go one
    // key deeper, to an unknown field) is reported separately.
    let mut prefix = Some(path);
    while let Some(candidate) = prefix.filter(|p| !p.is_empty()) {
        if let Some(rest) = message
            .strip_prefix(candidate)
            .and_then(|r| r.strip_prefix(": "))
        {
            message = rest;
            break;
        }
        prefix = candidate.rfind(['.', '[']).map(|cut| &candidate[..cut]);
    }
    shape::with_hint(message.to_string())
}

/// Fills in the line (and column) of each config-file error from its field path.
fn with_lines(mut errors: Vec<ConfigError>, text: &str, file: &Path) -> ConfigErrors {
    if errors.iter().any(|e| e.line.is_none() && e.file == file) {
        let index = locate::LineIndex::new(text);
        for error in errors
            .iter_mut()
            .filter(|e| e.line.is_none() && e.file == file)
        {
            if let Some(position) = index.locate(&error.path) {
                error.line = Some(position.line);
                error.column = Some(position.column);
            }
        }
    }
    // Config-file errors in line order, then those in other files (access lists).
    errors.sort_by(|a, b| {
        (a.file != file, &a.file, a.line.unwrap_or(usize::MAX)).cmp(&(
            b.file != file,
            &b.file,
            b.line.unwrap_or(usize::MAX),
        ))
    });
    ConfigErrors(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_leaves_out_what_is_unknown() {
        let mut e = ConfigError {
            file: PathBuf::from("gateway.yaml"),
            line: Some(3),
            column: Some(5),
            path: "routes[0].path".to_string(),
            message: "bad".to_string(),
        };
        assert_eq!(e.to_string(), "gateway.yaml:3:5: routes[0].path: bad");
        e.column = None;
        assert_eq!(e.to_string(), "gateway.yaml:3: routes[0].path: bad");
        e.line = None;
        assert_eq!(e.to_string(), "gateway.yaml: routes[0].path: bad");
        e.path.clear();
        assert_eq!(e.to_string(), "gateway.yaml: bad");
    }

    #[test]
    fn yaml_messages_lose_location_and_path() {
        assert_eq!(
            yaml_message("server: unknown field `x` at line 3 column 5", "server"),
            "unknown field `x`"
        );
        assert_eq!(
            yaml_message(
                "routes[0].forward: unknown field `x`, expected `y` at line 10 column 7",
                "routes[0].forward.x"
            ),
            "unknown field `x`, expected `y`"
        );
        assert_eq!(
            yaml_message("invalid type: string \"a\", expected u64", ""),
            "invalid type: string \"a\", expected u64"
        );
    }

    /// Files by path, for configs that name access lists, certs and keys.
    struct MemFs(Vec<(&'static str, &'static str)>);

    impl FileSource for MemFs {
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.0
                .iter()
                .find(|(p, _)| Path::new(p) == path)
                .map(|(_, text)| text.as_bytes().to_vec())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    const FILE: &str = "/etc/cg/gateway.yaml";

    fn files() -> MemFs {
        MemFs(vec![
            ("/etc/cg/lists/a.txt", "0192:310497460\n991825827 # bank\n"),
            ("/etc/cg/lists/bad.txt", "310497460\n12345\n"),
            ("/etc/cg/tls.crt", "cert"),
            ("/etc/cg/tls.key", "key"),
            ("/etc/cg/ca.pem", "ca"),
            ("/etc/cg/authz-secret", "0123456789abcdef0123\n"),
            ("/etc/cg/short-secret", "short\n"),
        ])
    }

    const HEAD: &str = "\
issuers:
  - name: mp
    issuer: \"https://test.maskinporten.no/\"
    jwks_uri: \"https://test.maskinporten.no/jwk\"
upstreams:
  - name: up
    targets: [\"127.0.0.1:8081\"]
";

    /// HEAD plus `rest` (which usually starts with `routes:`).
    fn load_text(rest: &str) -> Result<Config, ConfigErrors> {
        load_with(&format!("{HEAD}{rest}"), Path::new(FILE), &files())
    }

    fn errors(rest: &str) -> Vec<ConfigError> {
        match load_text(rest) {
            Ok(_) => panic!("expected errors for:\n{rest}"),
            Err(ConfigErrors(errors)) => errors,
        }
    }

    /// Asserts exactly one error, at `path`, whose message contains `needle`.
    fn one_error(rest: &str, path: &str, needle: &str) -> ConfigError {
        let errors = errors(rest);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].path, path, "{errors:#?}");
        assert!(
            errors[0].message.contains(needle),
            "{:?}",
            errors[0].message
        );
        errors[0].clone()
    }

    fn route(extra: &str) -> String {
        format!("routes:\n  - name: r\n    path: /p/{{id}}/{{year}}\n    upstream: up\n{extra}")
    }

    const TOKEN: &str = "    auth: token\n    issuers: [mp]\n";

    /// SPEC section 13, HTTP/2 and gRPC: ALPN, h2c, upstream protocol and
    /// `grpc` routes, each error at its field.
    #[test]
    fn http2_settings_are_validated_and_compiled() {
        let text = |server: &str, upstreams: &str, routes: &str| {
            format!(
                "server:\n  listen: [\"127.0.0.1:8080\"]\n{server}issuers:\n  - name: mp\n    \
                 issuer: \"https://test.maskinporten.no/\"\n    jwks_uri: \"https://test.maskinporten.no/jwk\"\n\
                 upstreams:\n{upstreams}routes:\n{routes}"
            )
        };
        let load = |t: &str| load_with(t, Path::new(FILE), &files());
        let tls = |alpn: &str| {
            format!("  tls:\n    - listen: \"127.0.0.1:8443\"\n      cert: tls.crt\n      key: tls.key\n{alpn}")
        };
        let up = |extra: &str| format!("  - name: g\n    targets: [\"127.0.0.1:50051\"]\n{extra}");
        let grpc_route = "  - name: r\n    path: /pkg.Svc/{m}\n    upstream: g\n    auth: none\n    grpc: true\n";
        let config = load(&text(
            &format!("  h2c: true\n{}", tls("      alpn: [h2, http/1.1]\n")),
            &up("    protocol: h2c\n"),
            grpc_route,
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(config.server.h2c);
        assert!(config.server.tls[0].h2 && config.server.tls[0].http11);
        assert_eq!(config.server.limits.h2_max_concurrent_streams, 100);
        assert_eq!(config.upstreams[0].protocol, UpstreamProtocol::H2c);
        assert!(config.routes[0].grpc);
        // Defaults: HTTP/1.1 only, h1 upstreams, no h2c.
        let plain = load(&text(
            &tls(""),
            &up(""),
            "  - {name: r, path: /, upstream: g, auth: none}\n",
        ))
        .unwrap();
        assert!(!plain.server.h2c);
        assert!(!plain.server.tls[0].h2 && plain.server.tls[0].http11);
        assert_eq!(plain.upstreams[0].protocol, UpstreamProtocol::H1);

        let open = "  - {name: r, path: /, upstream: g, auth: none}\n";
        let only = |t: String, path: &str, needle: &str| {
            let errors = load(&t).expect_err("invalid").0;
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert_eq!(errors[0].path, path, "{errors:#?}");
            assert!(
                errors[0].message.contains(needle),
                "{:?}",
                errors[0].message
            );
        };
        only(
            text("", &up("    protocol: h2\n"), open),
            "upstreams[0].protocol",
            "tls: true",
        );
        only(
            text("", &up("    protocol: h2c\n    tls: true\n"), open),
            "upstreams[0].protocol",
            "cleartext",
        );
        only(
            text("", &up("    protocol: h3\n"), open),
            "upstreams[0].protocol",
            "h3",
        );
        only(
            text(&tls("      alpn: []\n"), &up(""), open),
            "server.tls[0].alpn",
            "empty",
        );
        only(
            text(&tls("      alpn: [h2, h2]\n"), &up(""), open),
            "server.tls[0].alpn",
            "twice",
        );
        only(
            text(&tls("      alpn: [spdy]\n"), &up(""), open),
            "server.tls[0].alpn[0]",
            "spdy",
        );
        only(
            text(
                "  limits:\n    h2_max_concurrent_streams: 0\n",
                &up(""),
                open,
            ),
            "server.limits.h2_max_concurrent_streams",
            "at least 1",
        );
        only(
            text("", &up(""), grpc_route),
            "routes[0].grpc",
            "HTTP/2 to the upstream",
        );
    }

    #[test]
    fn server_authz_is_validated_and_compiled() {
        let authz = |body: &str| format!("server:\n  authz:\n{body}{}", route(TOKEN));
        let config = load_text(&authz(
            "    listen: \"127.0.0.1:9191\"\n    original_request: nginx\n    \
             path_prefix: /authz\n    shared_secret_file: authz-secret\n",
        ))
        .unwrap();
        let a = config.server.authz.expect("authz");
        assert_eq!(a.listen, Some("127.0.0.1:9191".parse().unwrap()));
        assert_eq!(a.original_request, OriginalRequest::Nginx);
        assert_eq!(a.path_prefix.as_deref(), Some("/authz"));
        assert_eq!(
            a.shared_secret.as_deref(),
            Some(&b"0123456789abcdef0123"[..])
        );
        assert!(
            !format!("{a:?}").contains("0123456789"),
            "the secret is never printed"
        );
        assert!(config
            .source_files
            .iter()
            .any(|f| f.ends_with("authz-secret")));

        let listen = "    listen: \"127.0.0.1:9191\"\n";
        one_error(
            &authz("    original_request: nginx\n"),
            "server.authz",
            "no listener",
        );
        let grpc = format!("{listen}    grpc_listen: \"127.0.0.1:9192\"\n");
        let both = load_text(&authz(&grpc)).expect("both listeners");
        let both = both.server.authz.expect("authz");
        assert_eq!(both.grpc_listen, Some("127.0.0.1:9192".parse().unwrap()));
        let grpc_only = load_text(&authz("    grpc_listen: \"127.0.0.1:9192\"\n"));
        let grpc_only = grpc_only.expect("gRPC only").server.authz.expect("authz");
        assert_eq!(grpc_only.listen, None);
        let same = format!("{listen}    grpc_listen: \"127.0.0.1:9191\"\n");
        one_error(&authz(&same), "server.authz.grpc_listen", "already used");
        let bad_mode = format!("{listen}    original_request: haproxy\n");
        assert!(!errors(&authz(&bad_mode)).is_empty());
        for prefix in ["authz", "/authz/", "/", "/a?b"] {
            let text = format!("{listen}    path_prefix: \"{prefix}\"\n");
            one_error(&authz(&text), "server.authz.path_prefix", "");
        }
        let short = format!("{listen}    shared_secret_file: short-secret\n");
        one_error(
            &authz(&short),
            "server.authz.shared_secret_file",
            "16 bytes",
        );
        let absent = format!("{listen}    shared_secret_file: nowhere\n");
        one_error(
            &authz(&absent),
            "server.authz.shared_secret_file",
            "cannot read",
        );
        let taken = "    listen: \"127.0.0.1:9090\"\n";
        let admin = format!(
            "server:\n  admin_listen: \"127.0.0.1:9090\"\n  authz:\n{taken}{}",
            route(TOKEN)
        );
        one_error(&admin, "server.authz.listen", "already used");
    }

    #[test]
    fn a_leeway_beyond_five_minutes_is_an_error() {
        let with_leeway = |leeway: &str| {
            let head = HEAD.replace(
                "    jwks_uri: \"https://test.maskinporten.no/jwk\"\n",
                &format!(
                    "    jwks_uri: \"https://test.maskinporten.no/jwk\"\n    leeway: {leeway}\n"
                ),
            );
            load_with(
                &format!("{head}{}", route(TOKEN)),
                Path::new(FILE),
                &files(),
            )
        };
        assert!(with_leeway("5m").is_ok());
        assert!(with_leeway("0s").is_ok());
        let Err(ConfigErrors(errors)) = with_leeway("30m") else {
            panic!("a 30m leeway was accepted");
        };
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].path, "issuers[0].leeway");
        assert!(errors[0].message.contains("at most 5m"));
    }

    #[test]
    fn parse_errors_have_line_column_and_path() {
        let e = one_error(
            "routes:\n  - name: r\n    upstream: up\n",
            "routes[0]",
            "missing field `path`",
        );
        assert_eq!(e.file, PathBuf::from(FILE));
        assert!(e.line.is_some());
        let e = one_error(
            "server:\n  threads: two\nroutes: []\n",
            "server.threads",
            "invalid type",
        );
        assert_eq!(
            (e.line, e.column),
            Some((9, 12)).map(|(l, c)| (Some(l), Some(c))).unwrap()
        );
        one_error(
            &route("    auth: consnt\n"),
            "routes[0].auth",
            "unknown variant `consnt`",
        );
        one_error(
            "routes: []\naudit:\n  enabled: true\n  enabled: false\n",
            "audit",
            "duplicate field `enabled`",
        );
        one_error(
            &route("    forward:\n      strip_authorization: yes\n"),
            "routes[0].forward.strip_authorization",
            "invalid type",
        );
    }

    #[test]
    fn yaml_syntax_error_is_reported_with_its_line() {
        let errors = errors("routes:\n  - name: [unclosed\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].line.is_some(), "{errors:?}");
    }

    #[test]
    fn routes_key_is_required() {
        one_error("", "", "missing field `routes`");
    }

    #[test]
    fn a_valid_config_compiles_normalised() {
        let config = load_text(&route(
            "    host: API.Example.NO\n    methods: [get, GET, post]\n    strip_prefix: /p\n    issuers: [mp]\n\
             \x20   delegation:\n      suppliers: [\"303137211\"]\n\
             \x20   consumers:\n      allow: [\"310497460\"]\n      file: lists/a.txt\n\
             \x20   consent:\n      resources: [res]\n      subject:\n        header: X-Person-Id\n\
             \x20     metadata:\n        required: [InntektsAar]\n        match:\n          InntektsAar: {path_param: year}\n",
        ))
        .unwrap();
        let r = &config.routes[0];
        assert_eq!(r.host.as_deref(), Some("api.example.no"));
        assert_eq!(r.methods, vec!["GET", "POST"]);
        assert_eq!(r.strip_prefix.as_deref(), Some("/p"));
        assert_eq!(r.auth.mode, AuthMode::Consent);
        assert_eq!(r.auth.issuers, vec![0]);
        assert_eq!(
            r.auth.delegation.suppliers,
            Some(["0192:303137211".to_string()].into_iter().collect())
        );
        assert_eq!(
            r.auth.consumers,
            Some(
                ["0192:310497460", "0192:991825827"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        let consent = r.auth.consent.as_ref().unwrap();
        assert_eq!(
            consent.subject,
            Some(Binding::Header("x-person-id".to_string()))
        );
        assert_eq!(consent.actions, vec!["consent"]);
        assert_eq!(
            consent.subject_types,
            SubjectTypes {
                person: true,
                organization: true
            }
        );
        assert_eq!(consent.metadata_required, vec!["inntektsaar"]);
        assert_eq!(
            consent.metadata_match,
            vec![(
                "inntektsaar".to_string(),
                Binding::PathParam("year".to_string())
            )]
        );
        assert_eq!(
            config.source_files,
            vec![PathBuf::from(FILE), PathBuf::from("/etc/cg/lists/a.txt")]
        );
        assert_eq!(config.config_sha256.len(), 64);
        assert_ne!(config.config_sha256, config.content_sha256);
        assert!(config.server.threads >= 1);
        assert_eq!(
            config.server.admin_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
    }

    #[test]
    fn config_hash_is_of_the_file_bytes_and_content_hash_covers_access_lists() {
        let text = format!(
            "{HEAD}{}",
            route(&format!("{TOKEN}    consumers:\n      file: lists/a.txt\n"))
        );
        let a = load_with(&text, Path::new(FILE), &files()).unwrap();
        assert_eq!(a.config_sha256, compile::hex_sha256(&[text.as_bytes()]));
        let mut changed = files();
        changed.0[0].1 = "0192:310497460\n";
        let b = load_with(&text, Path::new(FILE), &changed).unwrap();
        assert_eq!(a.config_sha256, b.config_sha256);
        assert_ne!(a.content_sha256, b.content_sha256);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let config = load_text(
            "server:\n  tls:\n    - listen: \"0.0.0.0:8443\"\n      cert: tls.crt\n      key: /etc/cg/tls.key\nroutes: []\n",
        )
        .unwrap();
        assert_eq!(config.server.tls[0].cert, PathBuf::from("/etc/cg/tls.crt"));
    }

    #[test]
    fn unreadable_cert_key_and_ca_files() {
        let errors = errors(
            "server:\n  tls:\n    - listen: \"0.0.0.0:8443\"\n      cert: missing.crt\n      key: missing.key\n\
             routes: []\n",
        );
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["server.tls[0].cert", "server.tls[0].key"]);
        assert!(errors[0].message.contains("/etc/cg/missing.crt"));
        let ca = load_with(
            "issuers:\n  - {name: mp, issuer: i, jwks_uri: 'https://x/jwk', ca_file: nope.pem}\nroutes: []\n",
            Path::new(FILE),
            &files(),
        )
        .unwrap_err();
        assert_eq!(ca.0[0].path, "issuers[0].ca_file");
    }

    #[test]
    fn admin_listen_null_and_duplicate_listeners() {
        let config = load_text("server:\n  admin_listen: null\nroutes: []\n").unwrap();
        assert_eq!(config.server.admin_listen, None);
        one_error(
            "server:\n  listen: [\"0.0.0.0:8080\"]\n  admin_listen: \"0.0.0.0:8080\"\nroutes: []\n",
            "server.admin_listen",
            "already used by server.listen[0]",
        );
        assert!(
            load_text("server:\n  listen: [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nroutes: []\n")
                .is_ok()
        );
        one_error(
            "server:\n  listen: []\nroutes: []\n",
            "server.listen",
            "no listener",
        );
    }

    #[test]
    fn pingora_runtime_settings_default_to_pingoras_and_can_be_set() {
        let defaults = load_text("routes: []\n").expect("loads");
        assert!(defaults.server.work_stealing);
        assert_eq!(defaults.server.upstream_keepalive_pool_size, 128);
        let set = load_text(
            "server:\n  work_stealing: false\n  upstream_keepalive_pool_size: 1024\nroutes: []\n",
        )
        .expect("loads");
        assert!(!set.server.work_stealing);
        assert_eq!(set.server.upstream_keepalive_pool_size, 1024);
    }

    #[test]
    fn zero_limits_are_refused() {
        one_error(
            "server:\n  threads: 0\nroutes: []\n",
            "server.threads",
            "at least 1",
        );
        one_error(
            "server:\n  max_token_bytes: 0\nroutes: []\n",
            "server.max_token_bytes",
            "at least 1",
        );
        one_error(
            "server:\n  upstream_keepalive_pool_size: 0\nroutes: []\n",
            "server.upstream_keepalive_pool_size",
            "between 1 and 65536",
        );
        one_error(
            "server:\n  limits:\n    header_read_timeout: 0s\nroutes: []\n",
            "server.limits.header_read_timeout",
            "greater than zero",
        );
    }

    #[test]
    fn issuer_checks() {
        let base = "issuers:\n  - name: x\n    issuer: \"https://x/\"\n";
        let run = |rest: &str| {
            load_with(
                &format!("{base}{rest}routes: []\n"),
                Path::new(FILE),
                &files(),
            )
        };
        // An entry with only the required keys is exactly `Issuer::with_defaults`.
        let minimal = run("    jwks_uri: \"http://127.0.0.1:9/jwks\"\n").unwrap();
        assert_eq!(
            minimal.issuers[0],
            Issuer::with_defaults("x", "https://x/", "http://127.0.0.1:9/jwks")
        );
        assert!(run("    jwks_uri: \"http://localhost:9/jwks\"\n").is_ok());
        let e = run("    jwks_uri: \"http://x/jwks\"\n").unwrap_err();
        assert_eq!(e.0[0].path, "issuers[0].jwks_uri");
        let e = run("    jwks_uri: \"https://x/jwk\"\n    algorithms: []\n").unwrap_err();
        assert_eq!(e.0[0].path, "issuers[0].algorithms");
        let e =
            run("    jwks_uri: \"https://x/jwk\"\n    jwks_refresh: 1h\n    jwks_max_stale: 5m\n")
                .unwrap_err();
        assert_eq!(e.0[0].path, "issuers[0].jwks_max_stale");
        let ok = run("    jwks_uri: \"https://x/jwk\"\n    algorithms: [ES256, RS256, ES256]\n    max_token_lifetime: 10m\n")
            .unwrap();
        assert_eq!(
            ok.issuers[0].algorithms,
            vec![crate::keys::Alg::ES256, crate::keys::Alg::RS256]
        );
        assert_eq!(
            ok.issuers[0].max_token_lifetime,
            Some(std::time::Duration::from_secs(600))
        );
    }

    #[test]
    fn upstream_checks() {
        let run = |rest: &str| {
            load_with(
                &format!("upstreams:\n  - name: u\n{rest}routes: []\n"),
                Path::new(FILE),
                &files(),
            )
        };
        let ok = run("    targets: [\"api.internal:443\"]\n    tls: true\n").unwrap();
        assert_eq!(ok.upstreams[0].sni, None);
        let e = run("    targets: [\"api.internal:443\"]\n    ca_file: ca.pem\n").unwrap_err();
        assert_eq!(e.0[0].path, "upstreams[0].ca_file");
        assert!(e.0[0].message.contains("tls: true"));
        let e = run("    targets: [\"api.internal:443\"]\n    tls: true\n    sni: \"bad_name\"\n")
            .unwrap_err();
        assert_eq!(e.0[0].path, "upstreams[0].sni");
        let e = run("    targets: [\"a:1\"]\n    health_check:\n      path: health\n").unwrap_err();
        assert_eq!(e.0[0].path, "upstreams[0].health_check.path");
    }

    #[test]
    fn issuers_required_unless_auth_none() {
        one_error(&route("    auth: token\n"), "routes[0].issuers", "required");
        one_error(
            &route("    auth: token\n    issuers: []\n"),
            "routes[0].issuers",
            "must not be empty",
        );
        one_error(
            &route("    auth: none\n    scopes:\n      all: [a]\n"),
            "routes[0].scopes",
            "no effect with `auth: none`",
        );
        assert!(load_text(&route("    auth: none\n")).is_ok());
    }

    #[test]
    fn consent_only_with_auth_consent() {
        one_error(
            &route(&format!("{TOKEN}    consent:\n      resources: [x]\n")),
            "routes[0].consent",
            "only enforced with `auth: consent`",
        );
        one_error(
            &route("    issuers: [mp]\n"),
            "routes[0].consent",
            "needs a `consent` block",
        );
    }

    #[test]
    fn consent_block_checks() {
        let consent = |body: &str| route(&format!("    issuers: [mp]\n    consent:\n{body}"));
        one_error(
            &consent("      resources: []\n"),
            "routes[0].consent.resources",
            "must not be empty",
        );
        one_error(
            &consent("      resources: [r]\n      actions: []\n"),
            "routes[0].consent.actions",
            "must not be empty",
        );
        one_error(
            &consent("      resources: [r]\n      subject:\n        types: [person]\n"),
            "routes[0].consent.subject",
            "found 0",
        );
        one_error(
            &consent(
                "      resources: [r]\n      subject:\n        path_param: id\n        types: []\n",
            ),
            "routes[0].consent.subject.types",
            "must not be empty",
        );
        one_error(
            &consent("      resources: [r]\n      subject:\n        path_param: fnr\n"),
            "routes[0].consent.subject.path_param",
            "not in the route's path",
        );
        one_error(
            &consent("      resources: [r]\n      subject:\n        header: X-Consent-Subject\n"),
            "routes[0].consent.subject.header",
            "X-Consent-*",
        );
        one_error(
            &consent("      resources: [r]\n      subject:\n        header: \"bad header\"\n"),
            "routes[0].consent.subject.header",
            "not a valid header name",
        );
        one_error(
            &consent("      resources: [r]\n      subject:\n        query: access_token\n"),
            "routes[0].consent.subject.query",
            "access_token",
        );
        one_error(
            &consent("      resources: [r]\n      metadata:\n        match:\n          Aar: {query: a}\n          aar: {query: b}\n"),
            "routes[0].consent.metadata.match.aar",
            "case-insensitively",
        );
        one_error(
            &consent("      resources: [r]\n      metadata:\n        match:\n          aar: {}\n"),
            "routes[0].consent.metadata.match.aar",
            "found 0",
        );
        let ok = load_text(&consent(
            "      resources: [r]\n      subject:\n        query: fnr\n        types: [organization]\n",
        ))
        .unwrap();
        let rule = ok.routes[0].auth.consent.as_ref().unwrap();
        assert_eq!(rule.subject, Some(Binding::Query("fnr".to_string())));
        assert_eq!(
            rule.subject_types,
            SubjectTypes {
                person: false,
                organization: true
            }
        );
    }

    #[test]
    fn route_shape_checks() {
        one_error(
            &route("    auth: none\n    host: \"*.*.no\"\n"),
            "routes[0].host",
            "wildcard",
        );
        one_error(
            &route("    auth: none\n    methods: []\n"),
            "routes[0].methods",
            "must not be empty",
        );
        one_error(
            &route("    auth: none\n    methods: [GET, connect]\n"),
            "routes[0].methods[1]",
            "CONNECT",
        );
        one_error(
            &route("    auth: none\n    strip_prefix: /p/\n"),
            "routes[0].strip_prefix",
            "end with",
        );
        one_error(
            "routes:\n  - {name: r, path: '/a/{x}/{x}', upstream: up, auth: none}\n",
            "routes[0].path",
            "appears twice",
        );
        one_error(
            "routes:\n  - {name: '-', path: /a, upstream: up, auth: none}\n",
            "routes[0].name",
            "reserved",
        );
    }

    #[test]
    fn an_unreachable_route_is_refused() {
        let e = one_error(
            "routes:\n  - {name: a, path: '/a/{x}', upstream: up, auth: none}\n  - {name: b, host: x.no, path: '/a/{y}', upstream: up, auth: none}\n  - {name: c, path: '/a/{y}', upstream: up, auth: none}\n",
            "routes[2].methods",
            "routes[0]",
        );
        assert_eq!(e.line, Some(11));
    }

    #[test]
    fn body_bindings_are_validated() {
        let consent = |subject: &str, extra: &str| {
            format!(
                "routes:\n  - name: r\n    path: /s\n    upstream: up\n    issuers: [mp]\n{extra}    consent:\n      resources: [x]\n      subject: {subject}\n"
            )
        };
        let ok = load_text(&consent("{ body: { json_pointer: /person/fnr } }", "")).unwrap();
        assert_eq!(
            ok.routes[0].auth.consent.as_ref().unwrap().subject,
            Some(Binding::Body(BodyField::JsonPointer("/person/fnr".into())))
        );
        assert_eq!(ok.routes[0].max_body_bytes, Some(MAX_BODY_BYTES));
        let limited = load_text(&consent(
            "{ body: { form_field: fnr } }",
            "    max_body_bytes: 2048\n",
        ))
        .unwrap();
        assert_eq!(limited.routes[0].max_body_bytes, Some(2048));
        one_error(
            &consent("{ body: { json_pointer: person } }", ""),
            "routes[0].consent.subject.body",
            "must start with `/`",
        );
        one_error(
            &consent("{ body: { json_pointer: /a, form_field: b } }", ""),
            "routes[0].consent.subject.body",
            "exactly one",
        );
        one_error(
            &consent(
                "{ body: { json_pointer: /a } }",
                "    max_body_bytes: 70000\n",
            ),
            "routes[0].max_body_bytes",
            "65536",
        );
        one_error(
            &consent("{ header: X-Person-Id }", "    max_body_bytes: 100\n"),
            "routes[0].max_body_bytes",
            "no effect",
        );
    }

    #[test]
    fn an_issuer_takes_exactly_one_key_source() {
        let issuer = |keys: &str| {
            format!("issuers:\n  - name: f\n    issuer: \"https://f/\"\n{keys}routes: []\n")
        };
        let both = load_with(
            &issuer("    jwks_uri: \"https://f/jwk\"\n    jwks_file: keys.json\n"),
            Path::new(FILE),
            &files(),
        )
        .unwrap_err();
        assert_eq!(both.0[0].path, "issuers[0]", "{both:?}");
        let neither = load_with(&issuer(""), Path::new(FILE), &files()).unwrap_err();
        assert!(neither.0[0].message.contains("exactly one"), "{neither:?}");
        let missing = load_with(
            &issuer("    jwks_file: nope.json\n"),
            Path::new(FILE),
            &files(),
        )
        .unwrap_err();
        assert_eq!(missing.0[0].path, "issuers[0].jwks_file", "{missing:?}");
    }

    #[test]
    fn routes_sharing_a_path_need_disjoint_methods() {
        let ok = load_text(
            "routes:\n  - {name: a, path: '/a/{x}', methods: [GET, HEAD], upstream: up, auth: none}\n  - {name: b, path: '/a/{y}', methods: [post], upstream: up, auth: none}\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        one_error(
            "routes:\n  - {name: a, path: '/a/{x}', methods: [GET, POST], upstream: up, auth: none}\n  - {name: b, path: '/a/{y}', methods: [post], upstream: up, auth: none}\n",
            "routes[1].methods",
            "unreachable for POST",
        );
        one_error(
            "routes:\n  - {name: a, path: '/a/{x}', methods: [GET], upstream: up, auth: none}\n  - {name: b, path: '/a/{y}', upstream: up, auth: none}\n",
            "routes[1].methods",
            "each listed",
        );
    }

    #[test]
    fn delegation_and_consumer_lists() {
        one_error(
            &route(&format!(
                "{TOKEN}    delegation:\n      suppliers: [\"0192:303137212\"]\n"
            )),
            "routes[0].delegation.suppliers[0]",
            "check digit",
        );
        one_error(
            &route(&format!(
                "{TOKEN}    delegation:\n      allow: false\n      suppliers: [\"303137211\"]\n"
            )),
            "routes[0].delegation.suppliers",
            "no effect",
        );
        one_error(
            &route(&format!("{TOKEN}    consumers: {{}}\n")),
            "routes[0].consumers",
            "give `allow`",
        );
        let ok = load_text(&route(&format!("{TOKEN}    consumers:\n      allow: []\n"))).unwrap();
        assert_eq!(ok.routes[0].auth.consumers, Some(Default::default()));
        let ok = load_text(&route(TOKEN)).unwrap();
        assert_eq!(ok.routes[0].auth.consumers, None);
        assert_eq!(ok.routes[0].auth.delegation, DelegationRule::default());
    }

    #[test]
    fn a_bad_access_list_shared_by_routes_is_reported_once_per_line() {
        let text = "routes:\n  - {name: a, path: /a, upstream: up, auth: token, issuers: [mp], consumers: {file: lists/bad.txt}}\n  - {name: b, path: /b, upstream: up, auth: token, issuers: [mp], consumers: {file: lists/bad.txt}}\n";
        let errors = errors(text);
        let in_list: Vec<_> = errors
            .iter()
            .filter(|e| e.file == Path::new("/etc/cg/lists/bad.txt"))
            .collect();
        assert_eq!(in_list.len(), 1, "{errors:#?}");
        assert_eq!(in_list[0].line, Some(2));
        assert_eq!(in_list[0].path, "routes[0].consumers.file");
        assert!(errors
            .iter()
            .any(|e| e.path == "routes[1].consumers.file" && e.message.contains("has errors")));
    }

    #[test]
    fn unquoted_org_numbers_are_read_as_text() {
        let ok = load_text(&route(&format!(
            "{TOKEN}    delegation:\n      suppliers: [303137211]\n    consumers:\n      allow: [310497460, 0192:991825827]\n"
        )))
        .unwrap();
        let consumers = ok.routes[0].auth.consumers.as_ref().unwrap();
        assert!(consumers.contains("0192:310497460"));
        assert!(consumers.contains("0192:991825827"));
    }

    #[test]
    fn same_issuer_value_twice_in_one_route_is_ambiguous() {
        let text = "issuers:\n  - {name: a, issuer: 'https://i/', jwks_uri: 'https://i/jwk'}\n  - {name: b, issuer: 'https://i/', jwks_uri: 'https://i/jwk', audiences: [x]}\n\
                    upstreams:\n  - {name: up, targets: ['h:1']}\n\
                    routes:\n  - {name: r1, path: /1, upstream: up, auth: token, issuers: [a]}\n  - {name: r2, path: /2, upstream: up, auth: token, issuers: [a, b]}\n";
        let e = load_with(text, Path::new(FILE), &files()).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].path, "routes[1].issuers[1]");
    }

    const ALTINN_ROUTE: &str = "    auth: token\n    issuers: [mp]\n    consumers:\n      altinn_access_lists: [{owner: skd, identifier: inntekt-banker}]\n";

    /// `files()` plus a real RSA key at /etc/cg/mp.pem.
    fn altinn_files() -> MemFs {
        let issuer = crate::dev_issuer::DevIssuer::generate("k").unwrap();
        let pem: &'static str = Box::leak(issuer.private_pem().to_string().into_boxed_str());
        let mut fs = files();
        fs.0.push(("/etc/cg/mp.pem", pem));
        fs.0.push((
            "/etc/cg/not-a-key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n",
        ));
        fs
    }

    fn altinn_section(extra: &str) -> String {
        format!(
            "altinn:\n  environment: production\n  maskinporten:\n    client_id: c1\n    kid: k1\n    key_file: mp.pem\n{extra}"
        )
    }

    #[test]
    fn the_altinn_section_compiles_with_presets_and_lists_start_unavailable() {
        let text = format!("{HEAD}{}{}", altinn_section(""), route(ALTINN_ROUTE));
        let config = load_with(&text, Path::new(FILE), &altinn_files()).unwrap();
        let altinn = config.altinn.as_ref().unwrap();
        assert_eq!(altinn.platform_url, "https://platform.altinn.no");
        assert_eq!(altinn.maskinporten_url, "https://maskinporten.no");
        assert_eq!(altinn.scopes, ["altinn:resourceregistry/access-list.read"]);
        assert_eq!(altinn.key_file, Path::new("/etc/cg/mp.pem"));
        let lists = Altinn::lists_in_use(&config);
        assert_eq!(lists.len(), 1);
        assert_eq!(lists[0].to_string(), "skd/inntekt-banker");
        let synced = config.routes[0].auth.altinn.as_ref().unwrap();
        assert_eq!(
            synced.check("0192:310497460", 0.0),
            SyncedVerdict::Unavailable
        );
        let text = format!(
            "{HEAD}{}{}",
            altinn_section(
                "  platform_url: http://127.0.0.1:9/\n  maskinporten_url: http://localhost:8/\n"
            ),
            route(ALTINN_ROUTE)
        );
        let config = load_with(&text, Path::new(FILE), &altinn_files()).unwrap();
        let altinn = config.altinn.unwrap();
        assert_eq!(altinn.platform_url, "http://127.0.0.1:9");
        assert_eq!(altinn.maskinporten_url, "http://localhost:8");
    }

    #[test]
    fn synced_lists_admit_members_of_usable_copies_only() {
        let list = |members: &[&str], until_ms: Option<u64>| {
            let fresh = Freshness::default();
            if let Some(ms) = until_ms {
                fresh.set(ms);
            }
            SyncedList {
                list: AccessListRef {
                    owner: "o".into(),
                    identifier: "i".into(),
                },
                members: std::sync::Arc::new(members.iter().map(|m| m.to_string()).collect()),
                fresh,
            }
        };
        let a = "0192:310497460";
        let good = SyncedConsumers {
            lists: vec![list(&[a], Some(2_000))],
        };
        assert_eq!(good.check(a, 1.0), SyncedVerdict::Listed);
        assert_eq!(good.check("0192:991825827", 1.0), SyncedVerdict::NotListed);
        assert_eq!(
            good.check(a, 2.0),
            SyncedVerdict::Unavailable,
            "stale at max_stale exactly"
        );
        let empty = SyncedConsumers {
            lists: vec![list(&[], Some(2_000))],
        };
        assert_eq!(
            empty.check(a, 1.0),
            SyncedVerdict::NotListed,
            "an empty list admits no one"
        );
        let mixed = SyncedConsumers {
            lists: vec![list(&[a], Some(2_000)), list(&[], None)],
        };
        assert_eq!(mixed.check(a, 1.0), SyncedVerdict::Listed);
        assert_eq!(
            mixed.check("0192:991825827", 1.0),
            SyncedVerdict::Unavailable
        );
    }

    #[test]
    fn altinn_mistakes_are_reported_with_their_paths() {
        let load = |altinn: &str, route_extra: &str| {
            let text = format!("{HEAD}{altinn}{}", route(route_extra));
            match load_with(&text, Path::new(FILE), &altinn_files()) {
                Ok(_) => panic!("expected errors"),
                Err(ConfigErrors(errors)) => errors.into_iter().map(|e| e.path).collect::<Vec<_>>(),
            }
        };
        assert_eq!(
            load("", ALTINN_ROUTE),
            ["routes[0].consumers.altinn_access_lists"]
        );
        let bad_name = ALTINN_ROUTE.replace("owner: skd", "owner: \"s/kd\"");
        assert_eq!(
            load(&altinn_section(""), &bad_name),
            ["routes[0].consumers.altinn_access_lists[0].owner"]
        );
        assert_eq!(
            load(
                &altinn_section("  platform_url: http://platform.altinn.no\n"),
                ALTINN_ROUTE
            ),
            ["altinn.platform_url"]
        );
        assert_eq!(
            load(
                &altinn_section("  refresh: 1h\n  max_stale: 1h\n"),
                ALTINN_ROUTE
            ),
            ["altinn.max_stale"]
        );
        let no_key = altinn_section("").replace("mp.pem", "not-a-key.pem");
        assert_eq!(
            load(&no_key, ALTINN_ROUTE),
            ["altinn.maskinporten.key_file"]
        );
        assert_eq!(
            load(&altinn_section("  colour: blue\n"), ALTINN_ROUTE),
            ["altinn.colour"]
        );
    }
}
