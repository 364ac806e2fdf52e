//! OTLP trace export (SPEC section 13, `tracing.otlp_endpoint`): one server
//! span per decided request and a client span for its upstream call, sent
//! over OTLP/HTTP protobuf by the OpenTelemetry SDK's batch processor on its
//! own thread. A request never waits for the collector: a bounded queue,
//! spans it cannot take dropped and counted, export failures counted and
//! logged at most once a minute. Spans carry no personal data: no token, no
//! concrete path or query, no header value, no client address.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::config::Tracing;
use crate::trace_context::TraceContext;

/// How often an export failure is logged at most.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Spans lost, by cause (the `cause` label of
/// `consent_gateway_trace_spans_dropped_total`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans handed to the batch processor and not yet taken for export.
    queued: AtomicUsize,
    /// Spans dropped because the queue was full.
    queue_full: AtomicU64,
    /// Spans in batches the collector did not take.
    export_failed: AtomicU64,
    /// When a failure was last logged, and how many since went unlogged.
    last_failure_log: Mutex<Option<Instant>>,
    unlogged_failures: AtomicU64,
}

impl Counters {
    /// Spans dropped because the export queue was full, since start.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }

    /// Spans lost in exports the collector refused or never answered.
    pub fn export_failed(&self) -> u64 {
        self.export_failed.load(Ordering::Relaxed)
    }

    /// Counts a failed export; logs it unless one was logged within
    /// `FAILURE_LOG_INTERVAL`.
    fn failed(&self, spans: usize, error: &dyn std::fmt::Display) {
        {
            let mut last = self
                .last_failure_log
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < FAILURE_LOG_INTERVAL) {
                self.unlogged_failures.fetch_add(1, Ordering::Relaxed);
            } else {
                *last = Some(now);
                let earlier = self.unlogged_failures.swap(0, Ordering::Relaxed);
                log::warn!(
                    "OTLP export of {spans} span(s) failed: {error} ({earlier} more failure(s) \
                     since the last such line; at most one line a minute)"
                );
            }
        }
        self.export_failed
            .fetch_add(spans as u64, Ordering::Relaxed);
    }
}

/// The export queue in front of the SDK's batch processor: it admits at
/// most `limit` spans not yet taken for export and counts the rest. The
/// SDK's own queue has the same length and so never drops (its drop count
/// is private; ours is the metric).
#[derive(Debug)]
struct BoundedQueue {
    inner: BatchSpanProcessor,
    counters: Arc<Counters>,
    limit: usize,
}

impl SpanProcessor for BoundedQueue {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.counters.queued.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, telling the queue what left it and counting failures.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    counters: Arc<Counters>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.counters.queued.fetch_sub(spans, Ordering::Relaxed);
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.counters.failed(spans, e);
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A running export pipeline.
pub struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    counters: Arc<Counters>,
}

impl Exporter {
    /// The pipeline over `exporter`, with a queue of `queue_spans`. Sampling
    /// follows the caller's `sampled` flag; a trace the gateway starts is
    /// sampled (the flag it forwards says so).
    pub fn new<E: SpanExporter + 'static>(exporter: E, queue_spans: usize) -> Self {
        let counters = Arc::new(Counters::default());
        let limit = queue_spans.max(1);
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(limit)
            .with_scheduled_delay(Duration::from_secs(1))
            .build();
        let exporter = CountingExporter {
            inner: exporter,
            counters: Arc::clone(&counters),
        };
        let processor = BoundedQueue {
            inner: BatchSpanProcessor::new(exporter, batch),
            counters: Arc::clone(&counters),
            limit,
        };
        let resource = Resource::builder_empty()
            .with_service_name("consent-gateway")
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("consent-gateway");
        Self {
            provider,
            tracer,
            counters,
        }
    }

    /// The counts of spans lost.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Exports (queues) the spans of one request; never waits.
    pub fn record(&self, request: &RequestSpans<'_>) {
        let trace = request.trace;
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(&trace.trace_id),
            SpanId::from_hex(&trace.span_id),
        ) else {
            return;
        };
        let parent = match trace.parent_span_id.as_deref().map(SpanId::from_hex) {
            Some(Ok(parent)) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                parent,
                TraceFlags::new(trace.flags),
                true,
                trace
                    .tracestate
                    .as_deref()
                    .and_then(|s| s.parse::<TraceState>().ok())
                    .unwrap_or_default(),
            )),
            _ => Context::new(),
        };
        let (status, attributes) = server_attributes(request);
        let builder = self
            .tracer
            .span_builder(server_span_name(request))
            .with_kind(SpanKind::Server)
            .with_trace_id(trace_id)
            .with_span_id(span_id)
            .with_start_time(request.start)
            .with_attributes(attributes)
            .with_status(status);
        let server = self.tracer.build_with_context(builder, &parent);
        let within = parent.with_span(server);
        if let Some(call) = &request.upstream {
            if let Ok(call_id) = SpanId::from_hex(&call.span_id) {
                let (status, attributes) = upstream_attributes(request.method, call);
                let builder = self
                    .tracer
                    .span_builder(Cow::Owned(method_label(request.method).to_string()))
                    .with_kind(SpanKind::Client)
                    .with_span_id(call_id)
                    .with_start_time(call.start)
                    .with_attributes(attributes)
                    .with_status(status);
                let mut client = self.tracer.build_with_context(builder, &within);
                client.end_with_timestamp(request.end);
            }
        }
        within.span().end_with_timestamp(request.end);
    }

    /// Exports what is queued and stops, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), String> {
        self.provider
            .shutdown_with_timeout(timeout)
            .map_err(|e| e.to_string())
    }
}

/// The facts of one request's spans: plain data, no personal data.
pub struct RequestSpans<'a> {
    pub trace: &'a TraceContext,
    pub start: SystemTime,
    pub end: SystemTime,
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `1.0`, `1.1` or `2`.
    pub protocol: &'static str,
    /// The route's name and path template, once routed.
    pub route: Option<(&'a str, &'a str)>,
    /// `allow`, `deny` or `shadow_deny`.
    pub decision: &'a str,
    /// `ok` or the reason code.
    pub reason: &'a str,
    /// The status sent to the client (0: none).
    pub status: u16,
    pub upstream: Option<UpstreamCall>,
}

/// The upstream call of a request that went upstream.
#[derive(Debug, Clone)]
pub struct UpstreamCall {
    /// The client span's id (16 hex digits), named in the `traceparent`
    /// the upstream received.
    pub span_id: String,
    pub start: SystemTime,
    /// The target's address (`host:port`, from the configuration).
    pub target: String,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// `upstream_unavailable` or `upstream_timeout`, when it failed.
    pub error: Option<&'static str>,
}

impl UpstreamCall {
    /// A call starting now, to `target`, with a fresh span id.
    pub fn start(target: String) -> Self {
        let random = TraceContext::random();
        Self {
            span_id: crate::trace_context::hex(&random[16..24]),
            start: SystemTime::now(),
            target,
            status: None,
            error: None,
        }
    }
}

/// `{method} {route template}`, or `{method}` before a route is known
/// (OpenTelemetry HTTP server span naming).
fn server_span_name(request: &RequestSpans<'_>) -> Cow<'static, str> {
    let method = method_label(request.method);
    match request.route {
        Some((_, template)) => Cow::Owned(format!("{method} {template}")),
        None => Cow::Owned(method.to_string()),
    }
}

/// The method as OpenTelemetry's HTTP conventions bound it: a known one, or
/// `_OTHER`.
fn method_label(method: &str) -> &str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("_OTHER")
}

fn server_attributes(request: &RequestSpans<'_>) -> (Status, Vec<KeyValue>) {
    let mut attributes = vec![
        KeyValue::new(
            "http.request.method",
            method_label(request.method).to_string(),
        ),
        KeyValue::new("url.scheme", request.scheme),
        KeyValue::new("network.protocol.name", "http"),
        KeyValue::new("network.protocol.version", request.protocol),
        KeyValue::new("consent_gateway.decision", request.decision.to_string()),
        KeyValue::new("consent_gateway.reason", request.reason.to_string()),
    ];
    if let Some((name, template)) = request.route {
        attributes.push(KeyValue::new("http.route", template.to_string()));
        attributes.push(KeyValue::new("consent_gateway.route", name.to_string()));
    }
    if request.status != 0 {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(request.status),
        ));
    }
    // A server span is an error for 5xx only (a refusal is the answer).
    let status = if request.status >= 500 {
        attributes.push(KeyValue::new("error.type", request.reason.to_string()));
        Status::error(request.reason.to_string())
    } else {
        Status::Unset
    };
    (status, attributes)
}

fn upstream_attributes(method: &str, call: &UpstreamCall) -> (Status, Vec<KeyValue>) {
    let mut attributes = vec![KeyValue::new(
        "http.request.method",
        method_label(method).to_string(),
    )];
    let (host, port) = match call.target.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<i64>().ok()),
        None => (call.target.as_str(), None),
    };
    attributes.push(KeyValue::new(
        "server.address",
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    ));
    if let Some(port) = port {
        attributes.push(KeyValue::new("server.port", port));
    }
    if let Some(status) = call.status {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    let status = match (call.error, call.status) {
        (Some(error), _) => {
            attributes.push(KeyValue::new("error.type", error));
            Status::error(error)
        }
        (None, Some(code)) if code >= 400 => {
            attributes.push(KeyValue::new("error.type", code.to_string()));
            Status::error(code.to_string())
        }
        _ => Status::Unset,
    };
    (status, attributes)
}

/// The process's pipeline, once started.
static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Starts OTLP/HTTP export to `tracing.otlp_endpoint` (once per process).
pub fn start(settings: &Tracing) -> Result<(), String> {
    if EXPORTER.get().is_some() {
        return Ok(());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.otlp_endpoint.clone())
        .build()
        .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
    let _ = EXPORTER.set(Exporter::new(exporter, settings.queue_spans));
    log::info!(
        "exporting spans over OTLP/HTTP to {}",
        settings.otlp_endpoint
    );
    Ok(())
}

/// The running pipeline, when `tracing.otlp_endpoint` is set.
pub fn exporter() -> Option<&'static Exporter> {
    EXPORTER.get()
}

/// At exit: exports what is queued, waiting at most `timeout`.
pub fn shutdown(timeout: Duration) {
    if let Some(exporter) = EXPORTER.get() {
        if let Err(e) = exporter.shutdown(timeout) {
            log::warn!("OTLP: the last spans were not all exported: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Condvar;

    /// An exporter that holds every export until opened, and counts spans.
    #[derive(Debug, Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: Condvar,
        exported: AtomicUsize,
        fail: bool,
    }

    #[derive(Debug)]
    struct TestExporter(Arc<Gate>);

    impl SpanExporter for TestExporter {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let gate = &self.0;
            let mut open = gate.open.lock().unwrap();
            while !*open {
                open = gate.opened.wait(open).unwrap();
            }
            if gate.fail {
                return Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "refused".into(),
                ));
            }
            gate.exported.fetch_add(batch.len(), Ordering::Relaxed);
            Ok(())
        }
    }

    fn trace(n: u8) -> TraceContext {
        let mut random = [n; 24];
        random[0] = 0xab;
        TraceContext::from_headers(None, None, random)
    }

    fn denied(trace: &TraceContext) -> RequestSpans<'_> {
        RequestSpans {
            trace,
            start: SystemTime::now(),
            end: SystemTime::now(),
            method: "BREW",
            scheme: "http",
            protocol: "1.1",
            route: None,
            decision: "deny",
            reason: "no_route",
            status: 404,
            upstream: None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_waits() {
        let gate = Arc::new(Gate::default());
        let exporter = Exporter::new(TestExporter(Arc::clone(&gate)), 2);
        let traces: Vec<TraceContext> = (1..=10).map(trace).collect();
        // The first export is held: at most the queue (2) and the batch in
        // the exporter's hands (2) get through; the rest are dropped.
        for t in &traces {
            exporter.record(&denied(t));
        }
        let dropped = exporter.counters().queue_full();
        assert!((6..=8).contains(&dropped), "{dropped}");
        *gate.open.lock().unwrap() = true;
        gate.opened.notify_all();
        exporter.shutdown(Duration::from_secs(10)).unwrap();
        let exported = gate.exported.load(Ordering::Relaxed) as u64;
        assert_eq!(exported + dropped, 10, "every span exported or counted");
        assert_eq!(exporter.counters().export_failed(), 0);
    }

    #[test]
    fn failed_exports_count_their_spans() {
        let gate = Arc::new(Gate {
            open: Mutex::new(true),
            fail: true,
            ..Gate::default()
        });
        let exporter = Exporter::new(TestExporter(Arc::clone(&gate)), 64);
        let traces: Vec<TraceContext> = (1..=3).map(trace).collect();
        for t in &traces {
            exporter.record(&denied(t));
        }
        let _ = exporter.shutdown(Duration::from_secs(10));
        assert_eq!(exporter.counters().export_failed(), 3);
        assert_eq!(exporter.counters().queue_full(), 0);
    }

    #[test]
    fn attributes_follow_the_http_conventions_and_bound_the_method() {
        let t = trace(1);
        let mut request = denied(&t);
        assert_eq!(server_span_name(&request), "_OTHER");
        request.method = "GET";
        request.route = Some(("income", "/income/{fnr}"));
        request.status = 503;
        request.reason = "access_list_unavailable";
        assert_eq!(server_span_name(&request), "GET /income/{fnr}");
        let (status, attributes) = server_attributes(&request);
        assert_eq!(status, Status::error("access_list_unavailable"));
        let get = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(get("http.route").as_deref(), Some("/income/{fnr}"));
        assert_eq!(get("consent_gateway.route").as_deref(), Some("income"));
        assert_eq!(get("http.response.status_code").as_deref(), Some("503"));
        assert_eq!(
            get("error.type").as_deref(),
            Some("access_list_unavailable")
        );
        request.status = 403;
        assert_eq!(server_attributes(&request).0, Status::Unset);

        let mut call = UpstreamCall::start("[::1]:8443".to_string());
        assert_eq!(call.span_id.len(), 16);
        call.error = Some("upstream_timeout");
        let (status, attributes) = upstream_attributes("GET", &call);
        assert_eq!(status, Status::error("upstream_timeout"));
        let values: Vec<String> = attributes.iter().map(|kv| kv.value.to_string()).collect();
        assert!(values.contains(&"::1".to_string()), "{values:?}");
        assert!(values.contains(&"8443".to_string()), "{values:?}");
    }
}
