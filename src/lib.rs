//! suivi: exact per-campaign learner funnels for a national online course. Learner events come in
//! over gRPC and HTTP (`ingest`), are validated once (`event`), folded into in-memory counters by
//! a single writer (`pipeline`, `aggregate`), published for queries (`figures`, `query`), and
//! written to downstream reporting (`snapshot`: files, PostgreSQL), from which partner reports are
//! made (`report`). `app` wires it all; `main.rs` is a thin CLI.

pub mod aggregate;
pub mod app;
pub mod auth;
pub mod config;
pub mod day;
pub mod durable;
pub mod event;
pub mod figures;
pub mod forecast;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod listener;
pub mod pages;
pub mod partials;
pub mod pipeline;
pub mod proto;
pub mod pseudonym;
pub mod query;
pub mod registry;
pub mod report;
pub mod shutdown;
pub mod simulate;
pub mod snapshot;
pub mod standards;
pub mod telemetry;
pub mod tls;
