//! suivi's one integration-test binary: every test starts the real service in-process (see
//! `helpers`) on ports of its own, with a data directory of its own, and talks to it only through
//! real gRPC and HTTP clients, or runs the real `suivi` binary. Metrics are process-global, so
//! tests assert that they rise, never their absolute values.

#![allow(clippy::unwrap_used)]

mod auth;
mod caliper;
mod config;
mod crash;
mod deploy;
mod fuzz;
mod health;
mod helpers;
mod hostile;
mod ingest;
mod kafka;
mod limits;
mod metrics;
mod pages;
mod postgres;
mod query;
mod report;
mod scale_out;
mod senders;
mod shutdown;
mod snapshots;
mod tidy;
mod tls;
mod watch;
mod xapi;
