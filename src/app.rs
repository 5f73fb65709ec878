//! Wiring: builds each stage from the settings, connects them, and owns their lifetimes. It holds
//! no logic of its own. Start-up: bind the listeners ([`bind`]), then [`App::run`] loads the
//! registry and key, starts the writer thread, the servers, the snapshot task (file and
//! PostgreSQL sinks) and the half-quarterly reports when `reports_dir` is set; then it reports
//! ready. Shutdown, in data-flow order: stop intake (not ready, refuse new events), let the
//! servers finish what they hold (within `shutdown_grace`), drain the writer, write the final
//! snapshot, return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;
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

    /// Runs suivi until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (grpc_addr, http_addr) = (self.grpc_addr(), self.http_addr());
        let App {
            settings,
            registry,
            grpc,
            http,
        } = self;
        let metrics = telemetry::metrics_handle()?;
        let readiness = Arc::new(Readiness::default());
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
        let key = pseudonym::load_or_create(settings.pseudonym_key()?, &settings.data_dir)?;
        let time_zone = settings.time_zone()?;

        let figures = Arc::new(Figures::new(&registry, settings.chapter_count, Utc::now()));
        let (ingest, writer) = pipeline::start(
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
            ingest: ingest.clone(),
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
        let snapshots = tokio::spawn(snapshot::run(
            figures.clone(),
            sinks,
            snapshot::Schedule {
                interval: settings.snapshot_interval,
                retry_max: settings.snapshot_retry_max,
            },
            sink_health,
            stop_snapshots.clone(),
        ));
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
        let tick_ingest = ingest.clone();
        spawn_every(WRITER_TICK_INTERVAL, stop_snapshots.clone(), move || {
            tick_ingest.tick();
        });

        let pipeline::Writer { recovered, thread } = writer;
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
                ingest.clone(),
                Arc::new(EventParser::new(settings.chapter_count, key)),
                tokio::runtime::Handle::current(),
            )?),
            None => None,
        };
        health.set_service_status("", ServingStatus::Serving).await;
        health.set_serving::<ingest::grpc::IngestServer>().await;
        health
            .set_serving::<CounterServiceServer<query::grpc::CounterApi>>()
            .await;
        readiness.set(State::Ready);
        tracing::info!(
            grpc = %grpc_addr,
            http = %http_addr,
            data_dir = %settings.data_dir.display(),
            campaigns = registry.campaigns.len(),
            "suivi is ready"
        );

        tokio::select! {
            () = shutdown => {}
            () = stop_serving.cancelled() => tracing::error!("a server failed; shutting down"),
        }

        readiness.set(State::Stopping);
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Some(kafka) = kafka {
            // Before the pipeline closes: what was read is counted, checkpointed and committed.
            kafka.stop().await;
        }
        ingest.close().await;
        stop_serving.cancel();
        if tokio::time::timeout(settings.shutdown_grace, servers.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?settings.shutdown_grace, "servers still busy after the shutdown grace; closing anyway");
        }
        drop((intake, ingest));
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("cannot join the writer thread")?
            .map_err(|_panic| anyhow::anyhow!("the writer thread panicked"))?
            .context("the writer thread failed")?;
        stop_snapshots.cancel();
        snapshots.await.context("the snapshot task failed")?;
        if let Some(scheduled_reports) = scheduled_reports {
            scheduled_reports
                .await
                .context("the report schedule failed")?;
        }
        tracing::info!("suivi stopped");
        Ok(())
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
