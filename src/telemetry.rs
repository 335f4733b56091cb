//! Telemetry to Application Insights, when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set: the
//! `tracing` spans (function, job, shard, container, blob) and their events as requests,
//! dependencies and traces, and the worker's metrics ([`record`]), through OpenTelemetry and
//! the `opentelemetry-application-insights` exporter.
//!
//! Unset, nothing is started: no exporter, no thread, no layer; each [`record`] call is one
//! atomic load that finds no instruments. Spans are batched and sent every 5 s
//! (`OTEL_BSP_SCHEDULE_DELAY`), metrics every 60 s (`OTEL_METRIC_EXPORT_INTERVAL`), and both are
//! flushed by [`Telemetry::shutdown`] when a command (or `serve`) ends.
//!
//! The exporter's threads send over this process's `reqwest` client on its tokio runtime
//! ([`OnRuntime`]): no second HTTP stack. The instrumentation key never appears in a log or an
//! error (the exporter's `Debug` prints it, so it is never formatted).

use std::{sync::OnceLock, time::Duration};

use opentelemetry::{
    metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _},
    trace::TracerProvider as _,
    KeyValue,
};
use opentelemetry_application_insights::Exporter;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::{
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{SdkTracer, SdkTracerProvider},
    Resource,
};
use tokio::runtime::Handle;
use tracing_opentelemetry::OpenTelemetryLayer;

use crate::settings::{Settings, SettingsError};

/// The setting that turns telemetry on (the Functions host's own name for it).
pub const CONNECTION_STRING: &str = "APPLICATIONINSIGHTS_CONNECTION_STRING";

/// The name the worker goes by in Application Insights (`cloud_RoleName`), and its meter's and
/// tracer's name.
const SERVICE: &str = "lakebackup";

/// The setting refused, with the exporter's reason (fixed texts such as "invalid format",
/// "missing instrumentation key": never the value).
fn not_a_connection_string(reason: String) -> SettingsError {
    SettingsError::new(
        CONNECTION_STRING,
        format!("is not an Application Insights connection string: {reason}"),
    )
}

/// Telemetry on: the providers whose threads batch and send spans and metrics.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Starts telemetry when the connection string is set (`None` when it is not); the
    /// exporter sends on `runtime`. A malformed connection string is a settings error that
    /// names the setting, never its value.
    pub fn start(settings: &Settings, runtime: Handle) -> Result<Option<Self>, SettingsError> {
        let Some(connection_string) = settings.get(CONNECTION_STRING) else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| not_a_connection_string(e.to_string()))?;
        let client = OnRuntime { client, runtime };
        let exporter = Exporter::new_from_connection_string(connection_string, client)
            .map_err(|e| not_a_connection_string(e.to_string()))?;
        let resource = Resource::builder().with_service_name(SERVICE).build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        let _ = INSTRUMENTS.set(Instruments::new(&meter_provider.meter(SERVICE)));
        let tracer = tracer_provider.tracer(SERVICE);
        Ok(Some(Self {
            tracer_provider,
            meter_provider,
            tracer,
        }))
    }

    /// Whether the connection string, where set, is one the exporter takes (`Ok(false)`: not
    /// set): what `doctor` reports. Starts nothing.
    pub fn check(settings: &Settings) -> Result<bool, SettingsError> {
        let Some(connection_string) = settings.get(CONNECTION_STRING) else {
            return Ok(false);
        };
        Exporter::new_from_connection_string(connection_string, reqwest::Client::new())
            .map(|_| true)
            .map_err(|e| not_a_connection_string(e.to_string()))
    }

    /// The `tracing` layer that turns spans and their events into OpenTelemetry spans.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_tracked_inactivity(false)
    }

    /// Sends what is batched and stops the exporter's threads. Call it outside the runtime's
    /// tasks (after `block_on` returns), while the runtime still runs: the sends run on it.
    pub fn shutdown(self) {
        if let Err(e) = self.tracer_provider.shutdown() {
            eprintln!("lakebackup: telemetry: the last spans were not sent: {e}");
        }
        if let Err(e) = self.meter_provider.shutdown() {
            eprintln!("lakebackup: telemetry: the last metrics were not sent: {e}");
        }
    }
}

/// The exporter's HTTP client: `reqwest`'s, run on this process's tokio runtime, since the
/// exporter's own threads (a batch of spans, a metrics reader) have none.
#[derive(Debug, Clone)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// The worker's instruments, made once telemetry is on.
struct Instruments {
    versions_backed_up: Counter<u64>,
    bytes_copied: Counter<u64>,
    failures: Counter<u64>,
    job_duration: Histogram<f64>,
    part_duration: Histogram<f64>,
    poisoned: Counter<u64>,
    poison_depth: Gauge<u64>,
    rpo: Histogram<f64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

impl Instruments {
    fn new(meter: &Meter) -> Self {
        Self {
            versions_backed_up: meter
                .u64_counter(names::VERSIONS_BACKED_UP)
                .with_description("Versions copied into their own backup")
                .build(),
            bytes_copied: meter
                .u64_counter(names::BYTES_COPIED)
                .with_unit("By")
                .with_description("Bytes of the versions backed up")
                .build(),
            failures: meter
                .u64_counter(names::FAILURES)
                .with_description("Units and parts of jobs, and invocations, that failed")
                .build(),
            job_duration: meter
                .f64_histogram(names::JOB_DURATION)
                .with_unit("s")
                .with_description(
                    "Jobs from their start to their end, queued or run in one process",
                )
                .build(),
            part_duration: meter
                .f64_histogram(names::PART_DURATION)
                .with_unit("s")
                .with_description("Parts of shards, of every job")
                .build(),
            poisoned: meter
                .u64_counter(names::POISONED)
                .with_description("Messages moved to a poison queue")
                .build(),
            poison_depth: meter
                .u64_gauge(names::POISON_DEPTH)
                .with_description("Messages in a poison queue, read at each reconciliation timer")
                .build(),
            // A histogram, not a gauge: a pass records one value per directory level, and an
            // export must keep the worst of them (its max), not the last.
            rpo: meter
                .f64_histogram(names::RPO)
                .with_unit("s")
                .with_description(
                    "Age of the oldest lake version a backup part found and left without a \
                     backup (0: none)",
                )
                .build(),
        }
    }
}

/// The metrics' names, as Application Insights shows them (`customMetrics.name`).
pub mod names {
    pub const VERSIONS_BACKED_UP: &str = "lakebackup.versions_backed_up";
    pub const BYTES_COPIED: &str = "lakebackup.bytes_copied";
    pub const FAILURES: &str = "lakebackup.failures";
    pub const JOB_DURATION: &str = "lakebackup.job.duration";
    pub const PART_DURATION: &str = "lakebackup.part.duration";
    pub const POISONED: &str = "lakebackup.poisoned";
    pub const POISON_DEPTH: &str = "lakebackup.poison.depth";
    pub const RPO: &str = "lakebackup.rpo";
}

/// Telemetry is on: what only telemetry reads (a poison queue's depth) is worth reading.
pub fn enabled() -> bool {
    INSTRUMENTS.get().is_some()
}

/// Where the engines record what they count; each is a no-op while telemetry is off.
pub mod record {
    use std::time::Duration;

    use opentelemetry::KeyValue;

    use super::{attribute, INSTRUMENTS};

    /// One version copied into its own backup (every engine: direct, server-side, ADF).
    pub fn version_backed_up(container: &str, bytes: u64) {
        if let Some(instruments) = INSTRUMENTS.get() {
            let attributes = [attribute("container", container)];
            instruments.versions_backed_up.add(1, &attributes);
            instruments.bytes_copied.add(bytes, &attributes);
        }
    }

    /// `count` failures of work of `kind` (a job kind, or a function), for `reason`: one of a
    /// few fixed words (`unit`, `part`, `refused`, `invocation`), never a message.
    pub fn failures(kind: &str, reason: &'static str, count: u64) {
        if count == 0 {
            return;
        }
        if let Some(instruments) = INSTRUMENTS.get() {
            let attributes = [attribute("kind", kind), KeyValue::new("reason", reason)];
            instruments.failures.add(count, &attributes);
        }
    }

    /// A job of `kind` (its work: `backup`, `restore`, …), started by `origin` (`reconcile`,
    /// `producer`, …), from its start to its end: run in this process, or queued (recorded by
    /// the worker that wrote its summary).
    pub fn job_finished(kind: &str, origin: &str, succeeded: bool, took: Duration) {
        if let Some(instruments) = INSTRUMENTS.get() {
            let attributes = [
                attribute("kind", kind),
                attribute("origin", origin),
                KeyValue::new("succeeded", succeeded),
            ];
            instruments
                .job_duration
                .record(took.as_secs_f64(), &attributes);
        }
    }

    /// One part of a shard of `kind`, wherever its job runs.
    pub fn part_finished(kind: &str, took: Duration) {
        if let Some(instruments) = INSTRUMENTS.get() {
            instruments
                .part_duration
                .record(took.as_secs_f64(), &[attribute("kind", kind)]);
        }
    }

    /// A message moved to `queue`'s poison queue: `why` is `unusable` (the function refused
    /// it) or `given_up` (its last delivery failed).
    pub fn poisoned(queue: &str, why: &'static str) {
        if let Some(instruments) = INSTRUMENTS.get() {
            let attributes = [attribute("queue", queue), KeyValue::new("why", why)];
            instruments.poisoned.add(1, &attributes);
        }
    }

    /// How many messages `queue`'s poison queue holds now.
    pub fn poison_depth(queue: &str, depth: u64) {
        if let Some(instruments) = INSTRUMENTS.get() {
            instruments
                .poison_depth
                .record(depth, &[attribute("queue", queue)]);
        }
    }

    /// The RPO as a backup part of `container` saw it: the age of the oldest version it found
    /// without a backup and left so (zero when it left none).
    pub fn rpo(container: &str, behind: Duration) {
        if let Some(instruments) = INSTRUMENTS.get() {
            instruments
                .rpo
                .record(behind.as_secs_f64(), &[attribute("container", container)]);
        }
    }
}

fn attribute(key: &'static str, value: &str) -> KeyValue {
    KeyValue::new(key, value.to_owned())
}
