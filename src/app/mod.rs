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
use chrono_tz::Tz;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::aggregate::AggregatorSettings;
use crate::auth::{Gate, QuotaDefaults};
use crate::config::{MAX_CAMPAIGNS, Secret, Settings, Valid};
use crate::durable::journal;
use crate::durable::{DurableSettings, RecoveryReport};
use crate::event::EventParser;
use crate::figures::Figures;
use crate::ingest::Intake;
use crate::kafka::{Kafka, KafkaSettings};
use crate::listener::ListenerSettings;
use crate::pipeline::{PipelineSettings, shards};
use crate::proto::counter_service_server::CounterServiceServer;
use crate::query::{Readiness, State};
use crate::registry::Registry;
use crate::report::schedule::ScheduleSettings;
use crate::report::store::Store;
use crate::snapshot::{self, Sink, SinkHealth};
use crate::tls::Tls;
use crate::{ingest, pipeline, pseudonym, query, report, telemetry};

mod scale_out;
mod serve;
mod supervise;

#[doc(hidden)]
pub use supervise::Faults;
use supervise::{kafka_ended, kafka_settled, thread_end, watch_thread, writer_ended};

/// How often the writer is woken to sync or checkpoint when no events arrive.
const WRITER_TICK_INTERVAL: Duration = Duration::from_millis(50);
/// How often the metrics recorder drains its histograms.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// suivi with its listeners bound, ready to run.
#[derive(Debug)]
pub struct App {
    settings: Valid,
    registry: Registry,
    grpc: TcpListener,
    http: TcpListener,
    faults: Faults,
}

/// Binds the gRPC and HTTP listeners of validated `settings` (port 0 picks a free port).
pub async fn bind(settings: Valid) -> anyhow::Result<App> {
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

        let scale_out = scale_out::ScaleOut::prepare(&settings).await?;
        let figures = Arc::new(Figures::new(&registry, settings.chapter_count, Utc::now()));
        let (queue, writer) = pipeline::start(
            pipeline_settings(&settings, &registry, time_zone, scale_out.as_ref())?,
            figures.clone(),
        )
        .context("cannot start the writer thread")?;
        if scale_out.is_none() {
            // Every shard is counted here, and its figures are current.
            for shard in 0..queue.shards() {
                telemetry::record_shard(shard, true, Some(0), Some(Duration::ZERO));
            }
        }
        let intake = Arc::new(Intake {
            queue: queue.clone(),
            forwarder: scale_out
                .as_ref()
                .map(|scale_out| scale_out.forwarder.clone()),
            parser: EventParser::new(settings.chapter_count, key),
            max_batch_events: settings.max_batch_events,
            figures: figures.clone(),
        });
        let gate = Arc::new(gate(&settings)?);

        let stop_serving = CancellationToken::new();
        let stop_snapshots = CancellationToken::new();
        let servers = TaskTracker::new();

        gate.clone().watch(stop_snapshots.clone())?;
        let serving = serve::Serving {
            gate,
            intake: intake.clone(),
            figures: figures.clone(),
            readiness: readiness.clone(),
            shards: scale_out.as_ref().map(|scale_out| scale_out.board.clone()),
            // One bound for gRPC and HTTP ingest alike: each request in flight may buffer its body.
            ingest_bound: crate::http::Bound::new(
                "max_concurrent_ingest_requests",
                settings.max_concurrent_ingest_requests,
            ),
            listener_settings: ListenerSettings {
                max_connections: settings.max_connections,
                header_read_timeout: settings.header_read_timeout,
                http2_keepalive_interval: settings.http2_keepalive_interval,
                http2_keepalive_timeout: settings.http2_keepalive_timeout,
            },
            tls: settings.tls_files()?.map(Tls::load).transpose()?,
            stop: stop_serving.clone(),
            servers: servers.clone(),
        };
        serving.reload_tls();
        let health = serving.grpc(grpc, &settings).await?;

        let sink_health = Arc::new(SinkHealth::default());
        // Reports read the downstream store, never the live figures.
        let report_store = Arc::new(Store::from_settings(&settings, None)?);
        serving.http(
            http,
            &settings,
            metrics.clone(),
            sink_health.clone(),
            report_store.clone(),
            time_zone,
        );
        servers.close();

        let sinks = snapshot_sinks(&settings, time_zone)?;
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
        recovered_state(recovered, &settings.data_dir).await?;
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
        let scale_out_tasks = match &scale_out {
            Some(scale_out) => scale_out.start(&figures, &stop_snapshots)?,
            None => Vec::new(),
        };
        let caught_up = scale_out.as_ref().map(scale_out::ScaleOut::caught_up);
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
                () = kafka_settled(kafka.as_ref(), caught_up.as_ref()), if readiness.get() != State::Ready => {
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

        Running {
            queue,
            intake,
            kafka,
            stop_serving,
            servers,
            writer_thread,
            stop_tasks: stop_snapshots,
            snapshots,
            scheduled_reports,
            scale_out_tasks,
        }
        .shut_down(failure, &readiness, &health, settings.shutdown_grace)
        .await?;
        tracing::info!("suivi stopped");
        Ok(())
    }
}

/// The gate of `settings`: the credentials file's, or open (and said so).
fn gate(settings: &Settings) -> anyhow::Result<Gate> {
    let metrics_token = settings.metrics_token.as_ref().map(Secret::expose);
    match &settings.credentials {
        Some(path) => {
            let gate = Gate::load(
                path,
                QuotaDefaults {
                    events_per_second: settings.credential_events_per_second,
                    new_campaigns_per_day: settings.credential_new_campaigns_per_day,
                    max_batch_events: settings.max_batch_events,
                },
                metrics_token,
            )?;
            tracing::info!(file = %path.display(), "access needs a credential (bearer token)");
            Ok(gate)
        }
        None => {
            tracing::warn!(
                grpc = %settings.grpc_addr,
                http = %settings.http_addr,
                "access is open: no credentials file is set (credentials, SUIVI_CREDENTIALS), so \
                 anyone who reaches these addresses may send events and read every figure"
            );
            Ok(Gate::open(metrics_token))
        }
    }
}

/// What runs once suivi is started, to be stopped in data-flow order.
struct Running {
    queue: pipeline::Queue,
    intake: Arc<Intake>,
    kafka: Option<Kafka>,
    /// Stops the servers.
    stop_serving: CancellationToken,
    servers: TaskTracker,
    /// The watched writer thread, unless it has already ended.
    writer_thread: Option<supervise::Joined<anyhow::Result<()>>>,
    /// Stops the tasks after the writer: snapshots, the report schedule, the periodic ones.
    stop_tasks: CancellationToken,
    snapshots: Option<tokio::task::JoinHandle<()>>,
    scheduled_reports: Option<tokio::task::JoinHandle<()>>,
    /// Publishing and reading partials (`forward_to_kafka`): the last publish follows the
    /// writer's final one.
    scale_out_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Shuts down in data-flow order within one `grace`: not ready, Kafka (what was read is
    /// counted, checkpointed and committed; waited for at most the grace), no new events, the
    /// servers finish what they hold, the writer drains its queue, the final snapshot. Ends with
    /// `failure` when a thread suivi cannot run without ended.
    async fn shut_down(
        self,
        failure: Option<anyhow::Error>,
        readiness: &Readiness,
        health: &HealthReporter,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let Running {
            queue,
            intake,
            kafka,
            stop_serving,
            servers,
            writer_thread,
            stop_tasks,
            snapshots,
            scheduled_reports,
            scale_out_tasks,
        } = self;
        match &failure {
            None => readiness.set(State::Stopping),
            Some(error) => {
                readiness.set(State::Failed);
                tracing::error!(
                    error = %telemetry::chain(error.as_ref()),
                    "a thread suivi cannot run without ended; stopping with an error, to be restarted"
                );
            }
        }
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // One grace for the whole shutdown: SIGTERM ends within it whatever Kafka does.
        let deadline = tokio::time::Instant::now() + grace;
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
            tracing::warn!(grace = ?grace, "servers still busy after the shutdown grace; closing anyway");
        }
        drop((intake, queue));
        if let Some(writer_thread) = writer_thread {
            writer_thread
                .await
                .map_err(|_gone| anyhow::anyhow!("cannot join the writer thread"))?
                .map_err(|_panic| anyhow::anyhow!("the writer thread panicked"))?
                .context("the writer thread failed")?;
        }
        stop_tasks.cancel();
        for task in scale_out_tasks {
            task.await.context("a scale-out task failed")?;
        }
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
        Ok(())
    }
}

/// Waits until the writer has recovered the state from `data_dir`, and says what recovery did.
async fn recovered_state(
    recovered: oneshot::Receiver<anyhow::Result<RecoveryReport>>,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let report = match recovered.await {
        Ok(Ok(report)) => report,
        Ok(Err(error)) => {
            return Err(error.context(format!(
                "cannot recover the state from {}",
                data_dir.display()
            )));
        }
        Err(_) => anyhow::bail!("the writer thread ended during recovery"),
    };
    tracing::info!(
        checkpoint = ?report.checkpoint_position,
        events_replayed = report.events_replayed,
        torn_bytes = report.torn_bytes,
        seconds = report.duration.as_secs_f64(),
        "state recovered"
    );
    Ok(())
}

/// What the writer needs of the settings and the registry.
fn pipeline_settings(
    settings: &Settings,
    registry: &Registry,
    time_zone: Tz,
    scale_out: Option<&scale_out::ScaleOut>,
) -> anyhow::Result<PipelineSettings> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let wanted = scale_out.map_or(settings.shards, |scale_out| scale_out.shards);
    let shards = shards::layout(&settings.data_dir, wanted, cores)?;
    Ok(PipelineSettings {
        durable: (0..shards)
            .map(|shard| {
                let (journal_dir, checkpoint_dir) = shards::shard_dirs(&settings.data_dir, shard);
                DurableSettings {
                    journal_dir,
                    checkpoint_dir,
                    fsync: settings.fsync_policy(),
                    segment_bytes: settings.journal_segment_bytes,
                    max_record_bytes: journal::MAX_RECORD_BYTES,
                }
            })
            .collect(),
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
        sharding: match scale_out {
            Some(_) => shards::Sharding::Partition,
            None => shards::Sharding::Learner,
        },
        outbox: scale_out.map(|scale_out| scale_out.outbox.clone()),
    })
}

/// The snapshot sinks the settings ask for: the files in `data_dir`, and PostgreSQL when set;
/// each one's series registered at zero.
fn snapshot_sinks(settings: &Settings, time_zone: Tz) -> anyhow::Result<Vec<Sink>> {
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
    Ok(sinks)
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
