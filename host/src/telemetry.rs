//! Logs and traces.
//!
//! Logs go to stderr, as text or JSON lines; each line carries the fields
//! of the spans it happened in (the request's tenant, app, component and
//! trace id). Traces are `tracing` spans, exported over OTLP/HTTP (or HTTPS,
//! trusting the system's CAs and `--otlp-ca-file`) when an endpoint is
//! configured (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`) and not at
//! all otherwise. W3C trace context travels in `traceparent`:
//! taken from inbound requests and deliveries, and, while exporting,
//! rewritten on what the host passes on (to guests, to callees, to the
//! broker) so that each hop is a child of the span that made it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Whether spans are exported: only then is trace context rewritten.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    #[value(name = "http/json")]
    HttpJson,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging and tracing settings, shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// OTLP/HTTP collector base URL (spans go to `<url>/v1/traces`), e.g.
    /// `http://127.0.0.1:4318`; unset: no traces are exported.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Encoding of exported spans.
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_enum,
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: OtlpProtocol,
    /// CA certificates (PEM) to trust for an `https://` collector, besides
    /// the system's: for a collector whose certificate a private CA signed.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_ca_file: Option<std::path::PathBuf>,
    /// `service.name` of exported spans.
    #[arg(
        long,
        global = true,
        env = "OTEL_SERVICE_NAME",
        default_value = "trellis"
    )]
    pub service_name: String,
    /// Log lines as text or as JSON objects (filtered by `RUST_LOG`, default `info`).
    #[arg(
        long,
        global = true,
        env = "TRELLIS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] flushes what is left.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered; call after the async runtime ended.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {err}");
        }
    }
}

/// Installs the global subscriber: logs to stderr, spans to OTLP if set.
/// Call before starting the async runtime (the exporter has its own thread).
pub fn init(args: &TelemetryArgs) -> Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            // `span`: the innermost (its component); `spans`: every one
            // around it, the request's `trace_id` among them.
            .with_current_span(true)
            .with_span_list(true)
            .with_target(false)
            .with_filter(filter)
            .boxed(),
    };
    let (spans, provider) = match args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let provider = provider(endpoint, args)?;
            let tracer = provider.tracer("trellis");
            // Our own spans only: the libraries' would bury the request's.
            let ours = tracing_subscriber::filter::Targets::new()
                .with_target("trellis", tracing::Level::INFO);
            // Every span costs on the request path, and a component run is
            // entered on each of its many polls: no per-entry bookkeeping
            // (busy/idle time, context activation) and no attributes a
            // trace reader does not need (source location, thread, target).
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_filter(ours);
            EXPORTING.store(true, Ordering::Relaxed);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(Telemetry { provider })
}

fn provider(endpoint: &str, args: &TelemetryArgs) -> Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
    let protocol = match args.otlp_protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        OtlpProtocol::HttpJson => Protocol::HttpJson,
    };
    // Said now rather than with every export failing later.
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        anyhow::bail!("--otlp-endpoint {endpoint}: not an http:// or https:// URL");
    }
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http_client(args)?)
        .with_protocol(protocol)
        .with_endpoint(url.clone())
        .build()
        .with_context(|| format!("--otlp-endpoint {endpoint}: cannot export to {url}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(args.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Reporting::new(exporter, endpoint))
        .with_resource(resource)
        .build())
}

/// How long one export may take before the batch is dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's HTTP client: TLS by rustls on ring, trusting the system's
/// roots and the certificates of `--otlp-ca-file`. A blocking client, for
/// the exporter's own thread; built before the async runtime starts.
fn http_client(args: &TelemetryArgs) -> Result<reqwest::blocking::Client> {
    // The process-wide provider reqwest's TLS takes; already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::blocking::Client::builder().timeout(EXPORT_TIMEOUT);
    if let Some(path) = &args.otlp_ca_file {
        let flag = format!("--otlp-ca-file {}", path.display());
        let pem = std::fs::read(path).with_context(|| format!("{flag}: cannot read it"))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{flag}: not PEM certificates"))?;
        if certificates.is_empty() {
            anyhow::bail!("{flag}: no PEM certificate in it");
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .context("building the span exporter's HTTP client")
}

/// How often a collector that keeps failing is reported again.
const FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// The OTLP exporter, saying when exporting fails (the SDK, built without
/// its internal logs, would drop the batch without a word): the first
/// failure, then at most one line a minute counting what was lost, and a
/// line once it works again.
#[derive(Debug)]
struct Reporting<E> {
    inner: E,
    endpoint: String,
    failures: std::sync::Mutex<Failures>,
}

impl<E> Reporting<E> {
    fn new(inner: E, endpoint: &str) -> Self {
        Self {
            inner,
            endpoint: endpoint.to_owned(),
            failures: std::sync::Mutex::default(),
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Reporting<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let report = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(result.as_ref().err(), spans, Instant::now());
        match report {
            Some(Report::Failing {
                error,
                batches,
                spans,
            }) => tracing::warn!(
                collector = %self.endpoint, batches, spans,
                "exporting spans failed; they are dropped: {error}"
            ),
            Some(Report::Recovered { batches, spans }) => tracing::info!(
                collector = %self.endpoint, batches, spans,
                "exporting spans again (batches and spans dropped meanwhile)"
            ),
            None => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Exports that failed since the last success.
#[derive(Debug, Default)]
struct Failures {
    /// Dropped since the last success.
    batches: u64,
    spans: u64,
    /// When a failure was last reported.
    reported: Option<Instant>,
}

/// What to say about an export.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// Failing; `batches` and `spans` dropped since the last success.
    Failing {
        error: String,
        batches: u64,
        spans: u64,
    },
    /// Working again after dropping `batches` and `spans`.
    Recovered { batches: u64, spans: u64 },
}

impl Failures {
    /// Counts one export of `spans` (failed with `error`, or not) at `now`,
    /// and says what is worth a log line.
    fn note(
        &mut self,
        error: Option<&impl std::fmt::Display>,
        spans: u64,
        now: Instant,
    ) -> Option<Report> {
        let Some(error) = error else {
            if self.batches == 0 {
                return None;
            }
            let report = Report::Recovered {
                batches: self.batches,
                spans: self.spans,
            };
            *self = Self::default();
            return Some(report);
        };
        self.batches += 1;
        self.spans += spans;
        let due = self
            .reported
            .is_none_or(|at| now.duration_since(at) >= FAILURE_REPORT_INTERVAL);
        due.then(|| {
            self.reported = Some(now);
            Report::Failing {
                error: error.to_string(),
                batches: self.batches,
                spans: self.spans,
            }
        })
    }
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes `span` continue the trace in `headers`' `traceparent`, if any, and
/// records its trace id (also when not exporting, for the logs).
pub fn continue_from_headers(span: &Span, headers: &HeaderMap) {
    continue_trace(span, &HeaderExtractor(headers));
}

/// [`continue_from_headers`] for message headers.
pub fn continue_from_pairs(span: &Span, pairs: &[(String, String)]) {
    continue_trace(span, &PairsExtractor(pairs));
}

fn continue_trace(span: &Span, carrier: &dyn Extractor) {
    if exporting() {
        let parent = TraceContextPropagator::new().extract(carrier);
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));
    } else if let Some(trace_id) = carrier.get("traceparent").and_then(trace_id_of) {
        span.record("trace_id", trace_id);
    }
}

/// Renames a span once more is known about it (a request, once routed).
pub fn rename(span: &Span, name: impl Into<std::borrow::Cow<'static, str>>) {
    let name = name.into();
    if exporting() {
        // Once started (its context taken), only the OTel span can be renamed.
        span.context().span().update_name(name.clone());
    }
    span.record("otel.name", &*name);
}

/// The trace id of a well-formed `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace_id)
}

/// While exporting, sets `traceparent` (and `tracestate`) in `headers` to
/// `span`, so what receives them continues from it.
pub fn inject_headers(span: &Span, headers: &mut HeaderMap) {
    if exporting() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    }
}

/// [`inject_headers`] for message headers.
pub fn inject_pairs(span: &Span, pairs: &mut Vec<(String, String)>) {
    if exporting() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut PairsInjector(pairs));
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct PairsExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

struct PairsInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for PairsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_failures_are_reported_first_then_once_a_minute_then_on_recovery() {
        let mut failures = Failures::default();
        let t0 = Instant::now();
        let refused = "connection refused";
        assert_eq!(failures.note(None::<&String>, 512, t0), None);
        assert_eq!(
            failures.note(Some(&refused), 512, t0),
            Some(Report::Failing {
                error: refused.into(),
                batches: 1,
                spans: 512
            })
        );
        // Within the minute: counted, not said.
        assert_eq!(
            failures.note(Some(&refused), 100, t0 + Duration::from_secs(59)),
            None
        );
        assert_eq!(
            failures.note(Some(&refused), 10, t0 + Duration::from_secs(60)),
            Some(Report::Failing {
                error: refused.into(),
                batches: 3,
                spans: 622
            })
        );
        assert_eq!(
            failures.note(None::<&String>, 512, t0 + Duration::from_secs(61)),
            Some(Report::Recovered {
                batches: 3,
                spans: 622
            })
        );
        // A new outage is reported at once, counted afresh.
        assert_eq!(
            failures.note(Some(&refused), 7, t0 + Duration::from_secs(62)),
            Some(Report::Failing {
                error: refused.into(),
                batches: 1,
                spans: 7
            })
        );
    }

    #[test]
    fn trace_ids_are_read_from_well_formed_traceparents_only() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(
            trace_id_of(&format!("00-{id}-b7ad6b7169203331-01")),
            Some(id)
        );
        assert_eq!(trace_id_of("00-abc-def-01"), None);
        assert_eq!(trace_id_of(""), None);
    }

    #[test]
    fn message_headers_are_matched_without_regard_to_case_and_replaced() {
        let mut pairs = vec![
            ("TraceParent".to_owned(), "old".to_owned()),
            ("other".to_owned(), "kept".to_owned()),
        ];
        assert_eq!(PairsExtractor(&pairs).get("traceparent"), Some("old"));
        PairsInjector(&mut pairs).set("traceparent", "new".to_owned());
        assert_eq!(
            pairs,
            [
                ("other".to_owned(), "kept".to_owned()),
                ("traceparent".to_owned(), "new".to_owned())
            ]
        );
    }
}
