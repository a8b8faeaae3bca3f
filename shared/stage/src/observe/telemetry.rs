//! Logs and traces, set up once for every binary.
//!
//! Logs go to stderr: human text, or one JSON object per line with
//! `SLUICE_LOG_FORMAT=json`. Traces go to an OpenTelemetry collector (Jaeger
//! takes them natively) over OTLP HTTP/protobuf, configured by the standard
//! `OTEL_*` variables, and only when an endpoint is set: without one no
//! exporter, no OpenTelemetry layer, nothing paid.
//!
//! The trace of an import travels in the W3C `traceparent`/`tracestate`
//! headers of every message sluice publishes; each stage continues it.

use async_nats::HeaderMap;
/// Span attributes, for stages and commands that annotate their spans.
pub use opentelemetry::KeyValue;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
    Context,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{filter::filter_fn, layer::SubscriberExt, EnvFilter, Layer};

/// Whether spans are exported: without, trace context is neither read
/// nor written (no stage could continue it), so nothing is paid for it.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// What must outlive the program's work: the span exporter, flushed when
/// this is dropped (spans still queued would be lost otherwise).
#[must_use = "dropping it flushes and stops trace export"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Logs to stderr if `logs` (`RUST_LOG` filters, default `info`), and
    /// traces as `default_service` unless `OTEL_SERVICE_NAME` (or
    /// `OTEL_RESOURCE_ATTRIBUTES`) names the service otherwise.
    pub fn init(default_service: &str, logs: bool) -> Telemetry {
        let traces = match trace_exporter() {
            Ok(Some(exporter)) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(default_service))
                    .build(),
            ),
            Ok(None) => None,
            Err(e) => {
                eprintln!("{default_service}: traces are not exported: {e}");
                None
            }
        };
        // Spans of sluice's own code (dependencies trace at levels of their
        // choosing), and the warnings and errors inside them as span events.
        let otel = traces.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("sluice"))
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_filter(filter_fn(|meta| {
                    if meta.is_span() {
                        meta.target().starts_with("sluice")
                    } else {
                        *meta.level() <= Level::WARN
                    }
                }))
        });
        EXPORTING.store(traces.is_some(), std::sync::atomic::Ordering::Relaxed);
        let log = logs.then(log_layer);
        // Set already (tests start several stages in one process): the
        // first one's stays.
        let _first_stays = tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(log).with(otel),
        );
        Telemetry { traces }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("could not export the last spans: {e}");
            }
        }
    }
}

fn log_layer<S>() -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // sluice reports its NATS connection itself (connected, lost, refused):
    // the client's own lines, one per reconnect attempt, only on request.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,async_nats=off"));
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        // The current span's fields hold its trace_id and span_id.
        layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed()
    } else {
        layer.with_filter(filter).boxed()
    }
}

/// `None` when no OTLP endpoint is configured (or `OTEL_TRACES_EXPORTER=none`).
fn trace_exporter() -> Result<Option<opentelemetry_otlp::SpanExporter>, String> {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    if disabled
        || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    {
        return Ok(None);
    }
    // The exporter's HTTP client is reqwest's, built without a TLS provider.
    // Installed already by an earlier client: the same provider.
    let _same_provider = rustls::crypto::ring::default_provider().install_default();
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map(Some)
        .map_err(|e| e.to_string())
}

fn resource(default_service: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(default_service.to_owned())
            .build()
    }
}

/// The W3C trace-context headers of one span, worked out once and then
/// added to every message published under it.
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders(Vec<(String, String)>);

impl TraceHeaders {
    /// The trace context of `span`, to send along.
    pub fn of(span: &tracing::Span) -> Self {
        Self::of_context(&span.context())
    }

    /// The trace context `cx` holds, to send along.
    pub fn of_context(cx: &Context) -> Self {
        let mut headers = TraceHeaders::default();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(cx, &mut headers);
        }
        headers
    }

    /// Sets the headers on `headers`, replacing any trace context there.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.as_str(), value.as_str());
        }
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// The trace context a message carries (empty when it carries none, or
/// when nothing is exported).
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(h) if exporting() => TraceContextPropagator::new().extract(&HeaderExtractor(h)),
        _ => Context::new(),
    }
}

/// The trace context in `pairs` of W3C header names and values (as a
/// dead letter or a table keeps them).
pub fn extract_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Context {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(name, value);
    }
    extract(Some(&headers))
}

/// The remote span a message was published under, if any.
pub fn remote_span(headers: Option<&HeaderMap>) -> Option<SpanContext> {
    let cx = extract(headers);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// A span for one step of messaging, per OpenTelemetry's messaging
/// conventions: `name` is `"<operation> <destination>"`, `kind` the OTel
/// span kind. It records its own trace and span ids as fields, so every
/// log line inside it carries them; the other attributes go to the trace
/// only.
pub fn messaging_span(name: &str, kind: &'static str, operation: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        target: "sluice",
        "messaging",
        otel.name = name,
        otel.kind = kind,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    annotate(
        &span,
        [
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.operation.type", operation),
            KeyValue::new("messaging.operation.name", operation),
        ],
    );
    span
}

/// Continues the trace of `parent` in `span` (a new trace when `parent`
/// carries none), then records the ids the span got.
pub fn continue_trace(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        if let Err(e) = span.set_parent(parent) {
            tracing::debug!(error = %e, "cannot continue the trace");
        }
    }
    record_ids(span);
}

/// Records a span's trace and span ids as its fields (nothing without an
/// exporter: there are no ids to show).
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let ids = cx.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

/// Links `span` to the span of trace context `cx`, if it names one.
pub fn link(span: &tracing::Span, cx: Context) {
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Sets OTel attributes on `span` (not log fields: they would make every
/// log line long).
pub fn annotate(span: &tracing::Span, attributes: impl IntoIterator<Item = KeyValue>) {
    for kv in attributes {
        span.set_attribute(kv.key, kv.value);
    }
}
