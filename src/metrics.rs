//! Every Prometheus metric of SPEC section 9, declared in one place, with
//! bounded labels (route names, reason codes, issuer names; never a consumer,
//! subject, token or path).

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The label used for requests refused before a route is known.
pub const NO_ROUTE_LABEL: &str = "-";

/// The classes of `upstream_responses_total{class}`.
pub const UPSTREAM_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// One route's most used series, resolved on first use and then kept, so
/// that the request path does not hash label values on every request. Built
/// with each configuration generation (route names can change on reload);
/// a series, once made, is the very one `Metrics` exports.
#[derive(Default)]
pub struct RouteMetrics {
    allowed: OnceLock<IntCounter>,
    duration: OnceLock<Histogram>,
    upstream: [OnceLock<IntCounter>; UPSTREAM_CLASSES.len()],
}

impl RouteMetrics {
    /// `requests_total{route, decision="allow", reason="ok"}`.
    pub fn allowed(&self, metrics: &Metrics, route: &str) -> &IntCounter {
        self.allowed.get_or_init(|| {
            metrics
                .requests_total
                .with_label_values(&[route, "allow", "ok"])
        })
    }

    /// `request_duration_seconds{route}`.
    pub fn duration(&self, metrics: &Metrics, route: &str) -> &Histogram {
        self.duration
            .get_or_init(|| metrics.request_duration_seconds.with_label_values(&[route]))
    }

    /// `upstream_responses_total{route, class}`, `class` one of `UPSTREAM_CLASSES`.
    pub fn upstream(&self, metrics: &Metrics, route: &str, class: usize) -> &IntCounter {
        self.upstream[class].get_or_init(|| {
            metrics
                .upstream_responses_total
                .with_label_values(&[route, UPSTREAM_CLASSES[class]])
        })
    }
}

/// A label-less counter registered in `registry`.
fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(counter.clone()))
        .expect("unique metric");
    counter
}

/// All gateway metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub decision_duration_seconds: Histogram,
    pub upstream_responses_total: IntCounterVec,
    pub jwks_refresh_total: IntCounterVec,
    pub jwks_keys: IntGaugeVec,
    pub jwks_last_success_timestamp_seconds: IntGaugeVec,
    pub config_reloads_total: IntCounterVec,
    pub config_generation: IntGauge,
    pub token_cache_requests_total: IntCounterVec,
    pub http_errors_total: IntCounterVec,
    /// SPEC section 13: Altinn syncs by `kind` (`access_list`, `resource`,
    /// `token`) and `outcome` (`success`, `not_modified`, `failure`).
    pub altinn_sync_total: IntCounterVec,
    /// Members of each synced Altinn access list (`list` = `owner/identifier`).
    pub access_list_members: IntGaugeVec,
    /// Unix time of the last successful Altinn sync per `kind`.
    pub altinn_last_success_timestamp_seconds: IntGaugeVec,
    /// `authz_checks_total{protocol, decision}` (SPEC section 13).
    pub authz_checks_total: IntCounterVec,
    /// Audit lines dropped (queue full) and write errors: mirrored from the
    /// audit writer's counters at each scrape, under `audit_sync`.
    pub audit_dropped_total: IntCounter,
    pub audit_write_errors_total: IntCounter,
    /// Spans lost by `cause` (`queue_full`, `export_failed`): mirrored from
    /// the OTLP pipeline's counters at each scrape.
    pub trace_spans_dropped_total: IntCounterVec,
    /// Shared-state store calls by `op` and `outcome`, their latency, and
    /// whether the store answers (SPEC section 13).
    pub state_requests_total: IntCounterVec,
    pub state_request_duration_seconds: HistogramVec,
    pub state_up: IntGauge,
    audit_sync: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric. Names are the contract; a failure
    /// to register would be a programming error caught by the tests below.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let latency_buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0, 30.0,
        ];
        let request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "consent_gateway_request_duration_seconds",
                "Time from request arrival to the end of the response, per route.",
            )
            .buckets(latency_buckets),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration_seconds.clone()))
            .expect("unique metric");
        let decision_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "consent_gateway_decision_duration_seconds",
                "Time spent deciding allow or deny, excluding key fetches.",
            )
            .buckets(vec![
                0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                0.005, 0.01,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(decision_duration_seconds.clone()))
            .expect("unique metric");
        let config_generation = IntGauge::new(
            "consent_gateway_config_generation",
            "Generation of the configuration in force; starts at 1.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(config_generation.clone()))
            .expect("unique metric");
        let state_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "consent_gateway_state_request_duration_seconds",
                "Time of each shared-state store call, by op.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 1.0,
            ]),
            &["op"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(state_request_duration_seconds.clone()))
            .expect("unique metric");
        let state_up = IntGauge::new(
            "consent_gateway_state_up",
            "1 while the shared-state store answers, else 0.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(state_up.clone()))
            .expect("unique metric");

        let trace_spans_dropped_total = counter(
            "consent_gateway_trace_spans_dropped_total",
            "Spans not exported, by cause: queue_full (the export queue was full) or \
             export_failed (the collector refused or did not answer).",
            &["cause"],
        );
        for cause in ["queue_full", "export_failed"] {
            // Both series exist from the start (0 without `tracing`).
            trace_spans_dropped_total.with_label_values(&[cause]);
        }

        Self {
            trace_spans_dropped_total,
            state_requests_total: counter(
                "consent_gateway_state_requests_total",
                "Shared-state store calls by op and outcome (ok, error, timeout, circuit_open).",
                &["op", "outcome"],
            ),
            state_request_duration_seconds,
            state_up,
            requests_total: counter(
                "consent_gateway_requests_total",
                "Requests decided, by route, decision and reason.",
                &["route", "decision", "reason"],
            ),
            request_duration_seconds,
            decision_duration_seconds,
            upstream_responses_total: counter(
                "consent_gateway_upstream_responses_total",
                "Upstream responses by status class, or error when none came.",
                &["route", "class"],
            ),
            jwks_refresh_total: counter(
                "consent_gateway_jwks_refresh_total",
                "JWKS fetches (start-up, periodic, unknown kid) by outcome.",
                &["issuer", "outcome"],
            ),
            jwks_keys: gauge_vec(
                "consent_gateway_jwks_keys",
                "Usable signing keys held per issuer.",
                &["issuer"],
            ),
            jwks_last_success_timestamp_seconds: gauge_vec(
                "consent_gateway_jwks_last_success_timestamp_seconds",
                "Unix time of the last successful JWKS fetch per issuer.",
                &["issuer"],
            ),
            config_reloads_total: counter(
                "consent_gateway_config_reloads_total",
                "Configuration reload attempts by outcome.",
                &["outcome"],
            ),
            config_generation,
            token_cache_requests_total: counter(
                "consent_gateway_token_cache_requests_total",
                "Verified-token cache look-ups by result.",
                &["result"],
            ),
            http_errors_total: counter(
                "consent_gateway_http_errors_total",
                "Malformed requests answered before routing, by kind.",
                &["kind"],
            ),
            altinn_sync_total: counter(
                "consent_gateway_altinn_sync_total",
                "Altinn syncs (access lists, resources, tokens) by kind and outcome.",
                &["kind", "outcome"],
            ),
            access_list_members: gauge_vec(
                "consent_gateway_access_list_members",
                "Members held per Altinn access list.",
                &["list"],
            ),
            altinn_last_success_timestamp_seconds: gauge_vec(
                "consent_gateway_altinn_last_success_timestamp_seconds",
                "Unix time of the last successful Altinn sync per kind.",
                &["kind"],
            ),
            authz_checks_total: counter(
                "consent_gateway_authz_checks_total",
                "Checks answered by the authorization endpoints, by protocol and decision.",
                &["protocol", "decision"],
            ),
            audit_dropped_total: plain_counter(
                &registry,
                "consent_gateway_audit_dropped_total",
                "Audit lines dropped because the writer queue was full.",
            ),
            audit_write_errors_total: plain_counter(
                &registry,
                "consent_gateway_audit_write_errors_total",
                "Audit lines that could not be written to stdout.",
            ),
            audit_sync: std::sync::Mutex::new(()),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        if let Ok(_guard) = self.audit_sync.lock() {
            for (counter, total) in [
                (&self.audit_dropped_total, crate::audit::dropped()),
                (&self.audit_write_errors_total, crate::audit::write_errors()),
            ] {
                counter.inc_by(total.saturating_sub(counter.get()));
            }
            if let Some(exporter) = crate::otlp::exporter() {
                let counters = exporter.counters();
                for (cause, total) in [
                    ("queue_full", counters.queue_full()),
                    ("export_failed", counters.export_failed()),
                ] {
                    let counter = self.trace_spans_dropped_total.with_label_values(&[cause]);
                    counter.inc_by(total.saturating_sub(counter.get()));
                }
            }
        }
        let mut out = Vec::with_capacity(8192);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_metric_is_exposed() {
        let m = Metrics::new();
        m.requests_total
            .with_label_values(&["r", "allow", "ok"])
            .inc();
        m.request_duration_seconds
            .with_label_values(&["r"])
            .observe(0.01);
        m.decision_duration_seconds.observe(0.0001);
        m.upstream_responses_total
            .with_label_values(&["r", "2xx"])
            .inc();
        m.jwks_refresh_total
            .with_label_values(&["i", "success"])
            .inc();
        m.jwks_keys.with_label_values(&["i"]).set(2);
        m.jwks_last_success_timestamp_seconds
            .with_label_values(&["i"])
            .set(1);
        m.config_reloads_total.with_label_values(&["success"]).inc();
        m.config_generation.set(1);
        m.token_cache_requests_total
            .with_label_values(&["hit"])
            .inc();
        m.http_errors_total
            .with_label_values(&["invalid_request"])
            .inc();
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "consent_gateway_requests_total",
            "consent_gateway_request_duration_seconds",
            "consent_gateway_decision_duration_seconds",
            "consent_gateway_upstream_responses_total",
            "consent_gateway_jwks_refresh_total",
            "consent_gateway_jwks_keys",
            "consent_gateway_jwks_last_success_timestamp_seconds",
            "consent_gateway_config_reloads_total",
            "consent_gateway_config_generation",
            "consent_gateway_token_cache_requests_total",
            "consent_gateway_http_errors_total",
            "consent_gateway_trace_spans_dropped_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }
}
