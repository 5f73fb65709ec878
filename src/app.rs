//! Wiring: builds each stage from the settings, connects them, and owns their lifetimes. It holds
//! no logic of its own. Start-up: bind the listeners ([`bind`]), then [`App::run`] loads the
//! registry and key, starts the writer thread, the servers and the half-quarterly reports when
//! `reports_dir` is set; once the state is recovered (and, with Kafka on, the first partition
//! assignment settled, so that nothing this instance no longer owns is served or written) it
//! starts the snapshot task (file and PostgreSQL sinks) and reports ready. It supervises the
//! writer and Kafka consumer threads: if either ends while suivi runs, suivi is not ready at
//! once, shuts down and `run` returns an error (the process exits non-zero, to be restarted).
//! Shutdown, in data-flow order and within one `shutdown_grace`: stop intake (not ready, refuse
//! new events; the Kafka consumer is waited for at most the grace), let the servers finish what
//! they hold, drain the writer, write the final snapshot, return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;

use crate::aggregate::AggregatorSettings;
use crate::config::{MAX_CAMPAIGNS, Settings};
use crate::durable::DurableSettings;
use crate::durable::journal;
use crate::event::EventParser;
use crate::figures::Figures;
use crate::ingest::Intake;
use crate::kafka::{Kafka, KafkaSettings};
use crate::listener::{self, Listener, ListenerSettings};
use crate::pipeline::PipelineSettings;
use crate::proto::counter_service_server::CounterServiceServer;
use crate::query::http::QueryState;
use crate::query::{Readiness, State};
use crate::registry::Registry;
use crate::report::http::ReportState;
use crate::report::schedule::ScheduleSettings;
use crate::report::store::Store;
use crate::snapshot::{self, Sink, SinkHealth};
use crate::{ingest, pipeline, pseudonym, query, report, telemetry};

/// How often the writer is woken to sync or checkpoint when no events arrive.
const WRITER_TICK_INTERVAL: Duration = Duration::from_millis(50);
/// How often the metrics recorder drains its histograms.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// suivi with its listeners bound, ready to run.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    registry: Registry,
    grpc: TcpListener,
    http: TcpListener,
    faults: Faults,
}

/// Validates `settings` and binds the gRPC and HTTP listeners (port 0 picks a free port).
pub async fn bind(settings: Settings) -> anyhow::Result<App> {
    settings.validate()?;
    let registry = Registry::load(settings.campaigns_path())?;
    // Every registered campaign, `direct`, `unregistered` and max_unregistered_campaigns
    // others must fit in the campaign slots, so that nothing valid is ever refused.
    anyhow::ensure!(
        registry.campaigns.len() + 2 + settings.max_unregistered_campaigns <= MAX_CAMPAIGNS,
        "invalid max_unregistered_campaigns {}: with the registry's {} campaigns, direct and unregistered, suivi would hold more than {MAX_CAMPAIGNS} campaigns",
        settings.max_unregistered_campaigns,
        registry.campaigns.len()
    );
    let grpc = TcpListener::bind(settings.grpc_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for gRPC on {} (grpc_addr)",
                settings.grpc_addr
            )
        })?;
    let http = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (http_addr)",
                settings.http_addr
            )
        })?;
    Ok(App {
        settings,
        registry,
        grpc,
        http,
        faults: Faults::default(),
    })
}

impl App {
    /// The address the gRPC API listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.settings.grpc_addr)
    }

    /// The address the HTTP API listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.settings.http_addr)
    }

    /// The faults a test may cause once suivi runs.
    #[doc(hidden)]
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Runs suivi until `shutdown` resolves, then shuts down gracefully. Ends with an error,
    /// after the same shutdown, when a thread suivi cannot run without (the writer, the Kafka
    /// consumer) ends while it runs.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (grpc_addr, http_addr) = (self.grpc_addr(), self.http_addr());
        let App {
            settings,
            registry,
            grpc,
            http,
            faults: self_faults,
        } = self;
        let metrics = telemetry::metrics_handle()?;
        let readiness = Arc::new(Readiness::default());
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
        let key = pseudonym::load_or_create(settings.pseudonym_key()?, &settings.data_dir)?;
        let time_zone = settings.time_zone()?;

        let figures = Arc::new(Figures::new(&registry, settings.chapter_count, Utc::now()));
        let (queue, writer) = pipeline::start(
            PipelineSettings {
                durable: DurableSettings {
                    journal_dir: settings.data_dir.join("journal"),
                    checkpoint_dir: settings.data_dir.join("checkpoints"),
                    fsync: settings.fsync_policy(),
                    segment_bytes: settings.journal_segment_bytes,
                    max_record_bytes: journal::MAX_RECORD_BYTES,
                },
                aggregator: AggregatorSettings {
                    time_zone,
                    chapter_count: settings.chapter_count,
                    max_unregistered_campaigns: settings.max_unregistered_campaigns,
                },
                registered: registry
                    .campaigns
                    .iter()
                    .map(|campaign| campaign.id.clone())
                    .collect(),
                queue_events: settings.ingest_queue_events,
                queue_timeout: settings.ingest_queue_timeout,
                checkpoint_interval: settings.checkpoint_interval,
                checkpoint_journal_bytes: settings.checkpoint_journal_bytes,
            },
            figures.clone(),
        )
        .context("cannot start the writer thread")?;
        let intake = Arc::new(Intake {
            queue: queue.clone(),
            parser: EventParser::new(settings.chapter_count, key),
            max_batch_events: settings.max_batch_events,
        });

        let stop_serving = CancellationToken::new();
        let stop_snapshots = CancellationToken::new();
        let servers = TaskTracker::new();

        let (health, health_service) = tonic_health::server::health_reporter();
        // Not serving until the state is recovered, like /readyz.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("cannot build gRPC reflection")?;
        // Older clients (grpcio-reflection, Postman, older grpcurl) ask v1alpha.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("cannot build gRPC reflection v1alpha")?;
        // One bound for gRPC and HTTP ingest alike: each request in flight may buffer its body.
        let ingest_bound = crate::http::Bound::new(
            "max_concurrent_ingest_requests",
            settings.max_concurrent_ingest_requests,
        );
        let ingest_service = ingest::grpc::IngestServer::new(
            ingest::grpc::IngestApi::new(intake.clone(), settings.max_request_bytes),
            ingest_bound.clone(),
        );
        let query_readiness = readiness.clone();
        let counter_service = CounterServiceServer::with_interceptor(
            query::grpc::CounterApi::new(
                figures.clone(),
                settings.watch_interval,
                stop_serving.clone(),
            ),
            move |request| query::grpc::require_ready(&query_readiness, request),
        );
        let listener_settings = ListenerSettings {
            max_connections: settings.max_connections,
            header_read_timeout: settings.header_read_timeout,
            http2_keepalive_interval: settings.http2_keepalive_interval,
            http2_keepalive_timeout: settings.http2_keepalive_timeout,
        };
        let incoming = listener::accept(
            grpc,
            Listener::Grpc,
            listener_settings,
            stop_serving.clone(),
        );
        let grpc_server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(settings.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(settings.http2_keepalive_timeout))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(ingest_service)
            .add_service(counter_service)
            .serve_with_incoming_shutdown(incoming, stop_serving.clone().cancelled_owned());
        let failed = stop_serving.clone();
        servers.spawn(async move {
            if let Err(error) = grpc_server.await {
                tracing::error!(error = %error, "gRPC server failed");
                failed.cancel();
            }
        });

        let sink_health = Arc::new(SinkHealth::default());
        // Reports read the downstream store, never the live figures.
        let report_store = Arc::new(Store::from_settings(&settings, None)?);
        let router = ingest::http::routes(intake.clone(), settings.max_request_bytes)
            .route_layer(axum::middleware::from_fn_with_state(
                ingest_bound,
                crate::http::shed,
            ))
            .merge(query::http::routes(QueryState {
                figures: figures.clone(),
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                max_campaign_metrics: settings.max_campaign_metrics,
                sinks: sink_health.clone(),
            }))
            .merge(
                report::http::routes(ReportState {
                    store: report_store.clone(),
                    time_zone,
                })
                .route_layer(axum::middleware::from_fn_with_state(
                    crate::http::Bound::new(
                        "max_concurrent_reports",
                        settings.max_concurrent_reports,
                    ),
                    crate::http::shed,
                )),
            );
        let connections = listener::accept(
            http,
            Listener::Http,
            listener_settings,
            stop_serving.clone(),
        );
        servers.spawn(listener::serve_http(
            connections,
            router,
            listener_settings,
            stop_serving.clone(),
        ));
        servers.close();

        let mut sinks = vec![Sink::File(snapshot::file::FileSink::new(
            settings.data_dir.join("snapshots"),
            time_zone,
        )?)];
        if let Some(url) = &settings.postgres_url {
            sinks.push(Sink::Postgres(Box::new(
                snapshot::postgres::PostgresSink::new(url)?,
            )));
        }
        for sink in &sinks {
            telemetry::register_sink(sink.name());
        }
        // Started once ready: with Kafka on, no snapshot may restate a campaign this instance
        // held before the restart and no longer owns (it is released at the first assignment).
        let mut sinks_to_start = Some(sinks);
        let mut snapshots = None;
        let scheduled_reports = settings.reports_dir.clone().map(|directory| {
            tokio::spawn(report::schedule::run(
                ScheduleSettings {
                    store: report_store,
                    directory,
                    time_zone,
                    lang: settings.report_lang,
                    settle: settings.snapshot_interval.saturating_mul(2),
                },
                stop_snapshots.clone(),
            ))
        });
        let upkeep_metrics = metrics.clone();
        spawn_every(METRICS_UPKEEP_INTERVAL, stop_snapshots.clone(), move || {
            upkeep_metrics.run_upkeep();
        });
        let tick_queue = queue.clone();
        spawn_every(WRITER_TICK_INTERVAL, stop_snapshots.clone(), move || {
            tick_queue.tick();
        });

        let pipeline::Writer { recovered, thread } = writer;
        // Joined by a watcher thread from now on, so that its end is noticed at once.
        let mut writer_thread = Some(watch_thread("suivi-writer-watch", thread)?);
        let report = match recovered.await {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => anyhow::bail!(
                "cannot recover the state from {}: {error}",
                settings.data_dir.display()
            ),
            Err(_) => anyhow::bail!("the writer thread ended during recovery"),
        };
        tracing::info!(
            checkpoint = ?report.checkpoint_position,
            events_replayed = report.events_replayed,
            torn_bytes = report.torn_bytes,
            seconds = report.duration.as_secs_f64(),
            "state recovered"
        );
        let kafka = match KafkaSettings::from_settings(&settings) {
            Some(kafka_settings) => Some(Kafka::start(
                kafka_settings,
                queue.clone(),
                Arc::new(EventParser::new(settings.chapter_count, key)),
                tokio::runtime::Handle::current(),
                self_faults.stop_kafka.child_token(),
            )?),
            None => None,
        };
        if kafka.is_some() {
            // What this instance held before may belong to another one now: nothing is served
            // or snapshotted until the first assignment says what stays here.
            readiness.set(State::WaitingForKafka);
            tracing::info!("state recovered; waiting for the first Kafka partition assignment");
        }
        let (faults, fault_queue, stopped) = (self_faults, queue.clone(), stop_snapshots.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = faults.stop_writer.cancelled() => fault_queue.close().await,
                () = stopped.cancelled() => {}
            }
        });

        // Runs until asked to stop, or until a thread suivi cannot work without ends: a writer
        // or a consumer that is gone leaves a process that takes nothing in, so it must not say
        // it is ready; it exits with an error for its orchestrator to restart it (the restart
        // recovers from the journal).
        tokio::pin!(shutdown);
        let failure = loop {
            tokio::select! {
                () = &mut shutdown => break None,
                () = stop_serving.cancelled() => {
                    tracing::error!("a server failed; shutting down");
                    break None;
                }
                joined = thread_end(&mut writer_thread) => {
                    writer_thread = None;
                    break Some(writer_ended(joined));
                }
                () = kafka_ended(kafka.as_ref()) => {
                    break Some(anyhow::anyhow!("the Kafka consumer thread ended while suivi was running"));
                }
                () = kafka_settled(kafka.as_ref()), if readiness.get() != State::Ready => {
                    if let Some(sinks) = sinks_to_start.take() {
                        snapshots = Some(tokio::spawn(snapshot::run(
                            figures.clone(),
                            sinks,
                            snapshot::Schedule {
                                interval: settings.snapshot_interval,
                                retry_max: settings.snapshot_retry_max,
                            },
                            sink_health.clone(),
                            stop_snapshots.clone(),
                        )));
                    }
                    readiness.set(State::Ready);
                    health.set_service_status("", ServingStatus::Serving).await;
                    health.set_serving::<ingest::grpc::IngestServer>().await;
                    health
                        .set_serving::<CounterServiceServer<query::grpc::CounterApi>>()
                        .await;
                    tracing::info!(
                        grpc = %grpc_addr,
                        http = %http_addr,
                        data_dir = %settings.data_dir.display(),
                        campaigns = registry.campaigns.len(),
                        "suivi is ready"
                    );
                }
            }
        };

        match &failure {
            None => readiness.set(State::Stopping),
            Some(error) => {
                readiness.set(State::Failed);
                tracing::error!(
                    error = format!("{error:#}"),
                    "a thread suivi cannot run without ended; stopping with an error, to be restarted"
                );
            }
        }
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // One grace for the whole shutdown: SIGTERM ends within it whatever Kafka does.
        let deadline = tokio::time::Instant::now() + settings.shutdown_grace;
        if let Some(kafka) = kafka {
            // Before the pipeline closes: what was read is counted, checkpointed and committed.
            kafka
                .stop(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await;
        }
        queue.close().await;
        stop_serving.cancel();
        if tokio::time::timeout_at(deadline, servers.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?settings.shutdown_grace, "servers still busy after the shutdown grace; closing anyway");
        }
        drop((intake, queue));
        if let Some(writer_thread) = writer_thread {
            writer_thread
                .await
                .map_err(|_gone| anyhow::anyhow!("cannot join the writer thread"))?
                .map_err(|_panic| anyhow::anyhow!("the writer thread panicked"))?
                .context("the writer thread failed")?;
        }
        stop_snapshots.cancel();
        if let Some(snapshots) = snapshots {
            snapshots.await.context("the snapshot task failed")?;
        }
        if let Some(scheduled_reports) = scheduled_reports {
            scheduled_reports
                .await
                .context("the report schedule failed")?;
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        tracing::info!("suivi stopped");
        Ok(())
    }
}

/// Faults a test can cause in a running suivi, to see how it reacts. Nothing outside the process
/// reaches them: no setting, flag or route.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Makes the writer thread end while suivi runs (as if it had died).
    pub stop_writer: CancellationToken,
    /// Makes the Kafka consumer thread end while suivi runs (as if it had died).
    pub stop_kafka: CancellationToken,
}

/// How a watched thread ended, once it has: what it returned, or its panic.
type Joined<T> = oneshot::Receiver<std::thread::Result<T>>;

/// The joined writer thread: how it ended, as the error that stops suivi.
type WriterJoin = Result<std::thread::Result<anyhow::Result<()>>, oneshot::error::RecvError>;

/// Joins `thread` on a watcher thread of its own and answers how it ended. A plain thread rather
/// than `spawn_blocking`: a blocking task that lasts as long as suivi would keep tokio's paused
/// test clock from advancing.
fn watch_thread<T: Send + 'static>(
    name: &str,
    thread: std::thread::JoinHandle<T>,
) -> anyhow::Result<Joined<T>> {
    let (ended, joined) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Nobody listens any more once suivi has stopped.
            let _ = ended.send(thread.join());
        })
        .with_context(|| format!("cannot start the {name} thread"))?;
    Ok(joined)
}

/// Resolves when the thread watched by `joined` has ended; never when there is none.
async fn thread_end<T>(
    joined: &mut Option<Joined<T>>,
) -> Result<std::thread::Result<T>, oneshot::error::RecvError> {
    match joined {
        Some(joined) => joined.await,
        None => std::future::pending().await,
    }
}

/// Why the writer thread ended while suivi was running.
fn writer_ended(joined: WriterJoin) -> anyhow::Error {
    match joined {
        Ok(Ok(Ok(()))) => anyhow::anyhow!("the writer thread ended while suivi was running"),
        Ok(Ok(Err(error))) => error.context("the writer thread failed while suivi was running"),
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            anyhow::anyhow!("the writer thread panicked while suivi was running: {message}")
        }
        Err(_gone) => anyhow::anyhow!("cannot join the writer thread"),
    }
}

/// Resolves when the Kafka consumer thread has ended; never without Kafka.
async fn kafka_ended(kafka: Option<&Kafka>) {
    match kafka {
        Some(kafka) => kafka.ended().await,
        None => std::future::pending().await,
    }
}

/// Resolves once the first Kafka assignment is settled; at once without Kafka.
async fn kafka_settled(kafka: Option<&Kafka>) {
    if let Some(kafka) = kafka {
        kafka.settled().await;
    }
}

/// Runs `task` every `interval` until `stop` is cancelled.
fn spawn_every(interval: Duration, stop: CancellationToken, task: impl Fn() + Send + 'static) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticks.tick() => task(),
                () = stop.cancelled() => return,
            }
        }
    });
}
