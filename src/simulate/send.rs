//! The load-generating client of `suivi simulate`: sends a [`Simulation`] over concurrent gRPC
//! `IngestStream` streams, retries what failed with backoff (a resent event that was counted is a
//! duplicate and changes nothing), and sums what the service answered.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::proto::{self, ingest_service_client::IngestServiceClient};

use super::generate::Simulation;

/// Where and how to send a simulation.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// The gRPC endpoint, e.g. `http://127.0.0.1:50051`.
    pub grpc: String,
    /// Concurrent streams, each on its own connection; batch `i` goes on stream `i % streams`.
    pub streams: usize,
    pub batch_size: usize,
    /// The bearer token sent with every call, when suivi needs credentials.
    pub token: Option<String>,
    /// For an `https://` endpoint: a PEM CA to trust besides the system's roots.
    pub ca_cert: Option<std::path::PathBuf>,
}

/// What the service answered.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// Events answered for (each once, however often it was resent).
    pub events: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// The first few rejections received.
    pub first_rejections: Vec<RejectedEvent>,
    /// Streams broken and reopened on the way.
    pub retries: u64,
    pub elapsed: Duration,
}

/// One event the service refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEvent {
    /// The event's position in the simulation's order.
    pub index: usize,
    pub event_id: String,
    pub code: String,
    pub message: String,
}

/// Sends every event of `simulation` over `settings.streams` concurrent `IngestStream` streams
/// and sums the answers, printing progress to stderr about once a second. A broken stream or an
/// overloaded service (UNAVAILABLE) is retried with backoff by resending every batch not yet
/// answered: a resent event that had been counted is a duplicate and changes nothing.
pub async fn send(
    simulation: Arc<Simulation>,
    settings: &SendSettings,
) -> anyhow::Result<SendReport> {
    ensure!(
        settings.streams >= 1 && settings.batch_size >= 1,
        "streams and batch size must be at least 1"
    );
    let mut endpoint = Endpoint::from_shared(settings.grpc.clone())
        .with_context(|| format!("invalid gRPC endpoint {:?}", settings.grpc))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_adaptive_window(true);
    if settings.grpc.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &settings.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("cannot set up TLS to the gRPC endpoint")?;
    } else {
        ensure!(
            settings.ca_cert.is_none(),
            "--ca-cert is for an https:// endpoint"
        );
    }
    let num_events = simulation.num_events();
    let batches: Vec<Range<usize>> = (0..num_events)
        .step_by(settings.batch_size)
        .map(|start| start..(start + settings.batch_size).min(num_events))
        .collect();

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for stream in 0..settings.streams {
        let own_batches: Vec<Range<usize>> = batches
            .iter()
            .skip(stream)
            .step_by(settings.streams)
            .cloned()
            .collect();
        if !own_batches.is_empty() {
            tasks.spawn(run_stream(
                stream,
                endpoint.clone(),
                Arc::clone(&simulation),
                own_batches,
                Arc::clone(&tally),
                settings.token.clone(),
            ));
        }
    }

    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // The first tick of an interval is immediate; progress is due only after a full interval.
    ticker.tick().await;
    let mut last_tick = (Instant::now(), 0);
    loop {
        tokio::select! {
            finished = tasks.join_next() => match finished {
                None => break,
                Some(Ok(Ok(()))) => {}
                // Returning drops the join set, which aborts the other streams.
                Some(Ok(Err(error))) => return Err(error),
                Some(Err(error)) => return Err(anyhow!(error).context("a sending task failed")),
            },
            _ = ticker.tick() => {
                let answered = tally.answered.load(Ordering::Relaxed);
                let (then, answered_then) = last_tick;
                let rate = (answered - answered_then) as f64 / then.elapsed().as_secs_f64();
                eprintln!(
                    "sent {}, answered {}: {} accepted, {} duplicates, {} rejected; {:.0} events/s",
                    tally.sent.load(Ordering::Relaxed),
                    answered,
                    tally.accepted.load(Ordering::Relaxed),
                    tally.duplicates.load(Ordering::Relaxed),
                    tally.rejected.load(Ordering::Relaxed),
                    rate
                );
                last_tick = (Instant::now(), answered);
            }
        }
    }

    Ok(SendReport {
        events: tally.answered.load(Ordering::Relaxed),
        accepted: tally.accepted.load(Ordering::Relaxed),
        duplicates: tally.duplicates.load(Ordering::Relaxed),
        rejected: tally.rejected.load(Ordering::Relaxed),
        first_rejections: std::mem::take(
            &mut *tally
                .first_rejections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ),
        retries: tally.retries.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

// The sender: batches over concurrent streams, retried until answered.

/// Requests queued on a stream ahead of the service's answers.
const IN_FLIGHT_BATCHES: usize = 4;
/// Large enough for any sensible batch and for a response listing every event of it as rejected.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A stream gives up after this many failures in a row without an answered batch in between:
/// with the backoff, about half a minute, enough for a service to restart.
const MAX_FAILURES_WITHOUT_PROGRESS: u32 = 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Rejections kept to show.
const FIRST_REJECTIONS_KEPT: usize = 10;

/// The answers so far, shared by the streams and read by the progress line.
#[derive(Debug, Default)]
struct Tally {
    /// Events sent, resends included.
    sent: AtomicU64,
    /// Events whose batch was answered.
    answered: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    first_rejections: Mutex<Vec<RejectedEvent>>,
}

impl Tally {
    fn record(
        &self,
        simulation: &Simulation,
        batch: &Range<usize>,
        response: &proto::IngestStreamResponse,
    ) {
        self.answered
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.accepted
            .fetch_add(u64::from(response.accepted), Ordering::Relaxed);
        self.duplicates
            .fetch_add(u64::from(response.duplicates), Ordering::Relaxed);
        self.rejected
            .fetch_add(response.rejections.len() as u64, Ordering::Relaxed);
        if response.rejections.is_empty() {
            return;
        }
        let mut first = self
            .first_rejections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for rejection in &response.rejections {
            if first.len() >= FIRST_REJECTIONS_KEPT {
                break;
            }
            let index = batch.start + rejection.index as usize;
            first.push(RejectedEvent {
                index,
                event_id: simulation.event_id(index).unwrap_or_default(),
                code: rejection.code.clone(),
                message: rejection.message.clone(),
            });
        }
    }
}

/// Why one attempt at a stream ended early, and whether trying again may help.
#[derive(Debug)]
struct Failure {
    error: anyhow::Error,
    retryable: bool,
}

impl Failure {
    fn from_status(status: tonic::Status) -> Failure {
        use tonic::Code;
        let code = status.code();
        // Over the credential's rate: suivi says when to come back.
        let rate_limited = status.metadata().contains_key("grpc-retry-pushback-ms");
        let hint = match code {
            Code::ResourceExhausted if rate_limited => "; over the credential's rate, retrying",
            Code::InvalidArgument | Code::ResourceExhausted => "; try a smaller --batch-size",
            Code::Unauthenticated => "; give a token with --token or SUIVI_TOKEN",
            Code::PermissionDenied => {
                "; the token's credential needs events:write for these sources"
            }
            _ => "",
        };
        Failure {
            error: anyhow!("{code:?}: {}{hint}", status.message()),
            // Transport failures surface as these codes; UNAVAILABLE is also how an overloaded
            // service asks to be called again later.
            retryable: rate_limited
                || matches!(
                    code,
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Internal
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                        | Code::Aborted
                ),
        }
    }
}

/// Sends `batches` on one stream until each is answered, reopening the stream after a failure.
async fn run_stream(
    stream: usize,
    endpoint: Endpoint,
    simulation: Arc<Simulation>,
    batches: Vec<Range<usize>>,
    tally: Arc<Tally>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let mut answered = 0;
    let mut failures_without_progress = 0;
    loop {
        let answered_before = answered;
        let Err(failure) = stream_once(
            &endpoint,
            &simulation,
            &batches,
            &mut answered,
            &tally,
            token.as_deref(),
        )
        .await
        else {
            return Ok(());
        };
        if answered > answered_before {
            failures_without_progress = 0;
        }
        failures_without_progress += 1;
        if !failure.retryable || failures_without_progress > MAX_FAILURES_WITHOUT_PROGRESS {
            return Err(failure
                .error
                .context(format!("stream {stream} to {} failed", endpoint.uri())));
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (failures_without_progress - 1).min(16))
            .min(MAX_BACKOFF);
        tally.retries.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "stream {stream}: {:#}; resending its {} unanswered batches in {} ms",
            failure.error,
            batches.len() - answered,
            backoff.as_millis()
        );
        tokio::time::sleep(backoff).await;
    }
}

/// One attempt: opens a stream, sends the batches from `*answered` on and reads the answers in
/// order, moving `*answered` past each. Ends when every batch is answered, or at the first
/// failure.
async fn stream_once(
    endpoint: &Endpoint,
    simulation: &Simulation,
    batches: &[Range<usize>],
    answered: &mut usize,
    tally: &Tally,
    token: Option<&str>,
) -> Result<(), Failure> {
    let channel = endpoint.connect().await.map_err(|error| Failure {
        error: anyhow!(error).context("cannot connect"),
        retryable: true,
    })?;
    let mut client = IngestServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (requests, request_stream) = mpsc::channel(IN_FLIGHT_BATCHES);
    let unsent = &batches[*answered..];
    let producer = async move {
        for batch in unsent {
            let request = proto::IngestStreamRequest {
                events: simulation.batch(batch.clone()),
            };
            // The receiver is gone only when the call has ended, which the consumer reports.
            if requests.send(request).await.is_err() {
                return;
            }
            tally.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    };
    let mut request = tonic::Request::new(ReceiverStream::new(request_stream));
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| Failure {
            error: anyhow!("the token is not a valid header value"),
            retryable: false,
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    let consumer = async {
        let mut responses = client
            .ingest_stream(request)
            .await
            .map_err(Failure::from_status)?
            .into_inner();
        while let Some(batch) = batches.get(*answered) {
            match responses.message().await {
                Ok(Some(response)) => {
                    tally.record(simulation, batch, &response);
                    *answered += 1;
                }
                Ok(None) => {
                    return Err(Failure {
                        error: anyhow!("the service ended the stream before answering every batch"),
                        retryable: true,
                    });
                }
                Err(status) => return Err(Failure::from_status(status)),
            }
        }
        Ok(())
    };
    let mut consumer = std::pin::pin!(consumer);
    // The producer runs beside the consumer and no longer: once the consumer ends, successfully
    // or not, nothing more is sent.
    tokio::select! {
        result = &mut consumer => result,
        () = producer => consumer.await,
    }
}
