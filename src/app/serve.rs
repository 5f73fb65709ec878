//! The two servers, built from the stages they expose: gRPC (health, reflection v1 and v1alpha,
//! `IngestService`, `CounterService`) and HTTP (ingest, queries, `/metrics`, health, reports,
//! the pages),
//! each behind its bounded listener, on the task tracker the shutdown waits for.

use std::sync::Arc;

use anyhow::Context;
use chrono_tz::Tz;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{self, Gate};
use crate::config::Settings;
use crate::figures::Figures;
use crate::http::Bound;
use crate::ingest::Intake;
use crate::listener::{self, Listener, ListenerSettings};
use crate::pages::PagesState;
use crate::proto::counter_service_server::CounterServiceServer;
use crate::query::Readiness;
use crate::query::http::QueryState;
use crate::report::http::ReportState;
use crate::report::store::Store;
use crate::snapshot::SinkHealth;
use crate::tls::Tls;
use crate::{ingest, pages, query, report};

/// What the servers serve, and what stops them.
pub(super) struct Serving {
    /// Lets requests in by their credential.
    pub gate: Arc<Gate>,
    pub intake: Arc<Intake>,
    pub figures: Arc<Figures>,
    pub readiness: Arc<Readiness>,
    /// With `forward_to_kafka`: what is known of each shard.
    pub shards: Option<Arc<crate::partials::ShardBoard>>,
    /// Ingest requests in flight, over gRPC and HTTP together.
    pub ingest_bound: Bound,
    pub listener_settings: ListenerSettings,
    /// TLS on both listeners, when on.
    pub tls: Option<Tls>,
    /// Cancelled to stop both servers; a server that fails cancels it too.
    pub stop: CancellationToken,
    pub servers: TaskTracker,
}

impl Serving {
    /// Starts the gRPC server on `listener`; answers its health reporter, every service not
    /// serving until suivi is ready.
    pub async fn grpc(
        &self,
        listener: TcpListener,
        settings: &Settings,
    ) -> anyhow::Result<HealthReporter> {
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
        let ingest_service = ingest::grpc::IngestServer::new(
            ingest::grpc::IngestApi::new(
                self.intake.clone(),
                settings.max_request_bytes,
                self.gate.clone(),
            ),
            self.ingest_bound.clone(),
            self.gate.clone(),
        );
        let query_readiness = self.readiness.clone();
        let query_gate = self.gate.clone();
        let counter_service = CounterServiceServer::with_interceptor(
            query::grpc::CounterApi::new(
                self.figures.clone(),
                self.gate.clone(),
                settings.watch_interval,
                settings.time_zone()?,
                self.stop.clone(),
            ),
            move |request| query::grpc::admit(&query_gate, &query_readiness, request),
        );
        tracing::info!(
            address = %listener.local_addr().context("the gRPC listener has no address")?,
            security = Tls::describe(self.tls.as_ref()),
            "gRPC listening"
        );
        let incoming = listener::accept(
            listener,
            Listener::Grpc,
            self.listener_settings,
            self.tls.as_ref().map(Tls::grpc),
            self.stop.clone(),
        );
        let grpc_server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(settings.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(settings.http2_keepalive_timeout))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(ingest_service)
            .add_service(counter_service)
            .serve_with_incoming_shutdown(incoming, self.stop.clone().cancelled_owned());
        let failed = self.stop.clone();
        self.servers.spawn(async move {
            if let Err(error) = grpc_server.await {
                tracing::error!(error = %crate::telemetry::chain(&error), "gRPC server failed");
                failed.cancel();
            }
        });
        Ok(health)
    }

    /// Keeps the TLS configurations up to date with their files until the servers stop.
    pub fn reload_tls(&self) {
        if let Some(tls) = &self.tls {
            self.servers
                .spawn(tls.clone().reload_on_change(self.stop.clone(), tls_changed));
        }
    }

    /// Starts the HTTP server on `listener`: ingest (under the ingest bound), queries and
    /// `/metrics`, health, and reports (shed past `max_concurrent_reports`).
    pub fn http(
        &self,
        listener: TcpListener,
        settings: &Settings,
        metrics: PrometheusHandle,
        sinks: Arc<SinkHealth>,
        reports: Arc<Store>,
        time_zone: Tz,
    ) {
        let query_state = QueryState {
            figures: self.figures.clone(),
            metrics,
            readiness: self.readiness.clone(),
            max_campaign_metrics: settings.max_campaign_metrics,
            sinks,
            time_zone,
            shards: self.shards.clone(),
        };
        // Layers run outside in: a request is let in by its credential before it takes a place.
        let router = ingest::http::routes(self.intake.clone(), settings.max_request_bytes)
            .merge(ingest::xapi::routes(
                self.intake.clone(),
                Arc::new(settings.xapi.clone()),
                settings.max_request_bytes,
            ))
            .merge(ingest::caliper::routes(
                self.intake.clone(),
                settings.xapi.clone(),
                settings.max_request_bytes,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                self.ingest_bound.clone(),
                crate::http::shed,
            ))
            .merge(query::http::routes(query_state.clone()))
            .merge(
                report::http::routes(ReportState {
                    store: reports,
                    time_zone,
                })
                .route_layer(axum::middleware::from_fn_with_state(
                    Bound::new("max_concurrent_reports", settings.max_concurrent_reports),
                    crate::http::shed,
                )),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                self.gate.clone(),
                auth::http::authenticate,
            ))
            .merge(pages::routes(PagesState {
                figures: self.figures.clone(),
                gate: self.gate.clone(),
                readiness: self.readiness.clone(),
                time_zone,
                watch_interval: settings.watch_interval,
                shutdown: self.stop.clone(),
            }))
            .merge(query::http::operational_routes(
                query_state,
                self.gate.clone(),
            ))
            .merge(ingest::xapi::open_routes())
            .layer(axum::middleware::from_fn(ingest::xapi::version_header));
        if let Ok(address) = listener.local_addr() {
            tracing::info!(
                %address,
                security = Tls::describe(self.tls.as_ref()),
                "HTTP listening"
            );
        }
        let connections = listener::accept(
            listener,
            Listener::Http,
            self.listener_settings,
            self.tls.as_ref().map(Tls::http),
            self.stop.clone(),
        );
        self.servers.spawn(listener::serve_http(
            connections,
            router,
            self.listener_settings,
            self.stop.clone(),
        ));
    }
}

/// Counts and logs a change of the TLS files, swapped in or not.
fn tls_changed(outcome: anyhow::Result<()>) {
    crate::telemetry::record_tls_reload(outcome.is_ok());
    match outcome {
        Ok(()) => tracing::info!("TLS files changed: new connections get the new certificate"),
        Err(error) => tracing::error!(
            error = %crate::telemetry::chain(error.as_ref()),
            "TLS files changed but cannot be used; the previous certificate stays in use"
        ),
    }
}
