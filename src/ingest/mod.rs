//! The ingest edges' shared step: a batch of raw events, however it arrived, is parsed event by
//! event, its valid events go through the pipeline together, and the answer says how many were
//! accepted, how many were duplicates, and why each other one was rejected, by its index in the
//! batch. gRPC (`grpc`) and HTTP (`http`) only decode their wire format and call [`ingest_batch`];
//! xAPI (`xapi`) maps statements onto events and calls [`Intake::ingest_whole`], all or nothing.

pub mod caliper;
pub mod grpc;
pub mod http;
pub mod xapi;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::aggregate::Applied;
use crate::auth::Caller;
use crate::auth::quota::RateLimited;
use crate::event::{EventParser, RawEvent, RejectReason};
use crate::figures::Figures;
use crate::kafka::placed::Forwarder;
use crate::pipeline::{Queue, Refusal};
use crate::telemetry::{self, BatchTally, Transport};

/// The answer to one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchResult {
    pub accepted: u32,
    pub duplicates: u32,
    pub rejections: Vec<Rejection>,
}

/// One event of a batch that was not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The event's position in its batch, from 0.
    pub index: u32,
    pub code: &'static str,
    pub message: String,
}

/// Why a whole batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchRefusal {
    #[error(
        "the batch has {count} events, over the limit of {limit} events per request (max_batch_events)"
    )]
    TooManyEvents { count: usize, limit: usize },
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Pipeline(#[from] Refusal),
    /// `forward_to_kafka`: the broker did not acknowledge the events.
    #[error(
        "Kafka did not acknowledge the events ({0}); nothing is lost by sending them again: retry later"
    )]
    Unforwarded(String),
}

impl BatchRefusal {
    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            BatchRefusal::TooManyEvents { .. } => "batch_too_large",
            BatchRefusal::RateLimited(_) => "rate_limited",
            BatchRefusal::Pipeline(refusal) => refusal.reason(),
            BatchRefusal::Unforwarded(_) => "kafka_unavailable",
        }
    }
}

/// Why an all-or-nothing batch ([`Intake::ingest_whole`]) was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WholeRefusal {
    /// The event at `index` is invalid: none of the batch was submitted.
    #[error("event {index}: {reason}")]
    Invalid { index: usize, reason: RejectReason },
    #[error(transparent)]
    Batch(#[from] BatchRefusal),
}

/// What the edges share: the pipeline, the parser, the batch limit, and the figures that say
/// which campaigns already exist (for the credentials' new-campaign quota); with
/// `forward_to_kafka`, the forwarder the valid events go to instead of the pipeline.
#[derive(Debug)]
pub struct Intake {
    pub queue: Queue,
    pub forwarder: Option<Forwarder>,
    pub parser: EventParser,
    pub max_batch_events: usize,
    pub figures: Arc<Figures>,
}

impl Intake {
    /// Refuses a batch of `count` events sent by `caller` when it is over the batch limit or the
    /// caller's rate, before any work on it.
    pub fn check_batch(
        &self,
        transport: Transport,
        caller: &Caller,
        count: usize,
    ) -> Result<(), BatchRefusal> {
        let refusal = if count > self.max_batch_events {
            BatchRefusal::TooManyEvents {
                count,
                limit: self.max_batch_events,
            }
        } else {
            match caller.take_events(count) {
                Ok(()) => return Ok(()),
                Err(limited) => {
                    telemetry::record_credential_events(caller.id(), "rate_limited", count as u64);
                    BatchRefusal::RateLimited(limited)
                }
            }
        };
        telemetry::record_refused(transport, refusal.reason(), count);
        Err(refusal)
    }

    /// Parses, checks against `caller`'s grants, submits and answers one batch; each item is an
    /// event as it arrived, or the reason it could not even be read as one.
    pub async fn ingest_batch<'a>(
        &self,
        transport: Transport,
        caller: &Caller,
        raw_events: impl IntoIterator<Item = Result<RawEvent<'a>, RejectReason>>,
    ) -> Result<BatchResult, BatchRefusal> {
        let started = Instant::now();
        let now = Utc::now();
        let mut events = Vec::new();
        // The valid events as they came, when they are forwarded.
        let mut valid = Vec::new();
        let mut rejected = Vec::new();
        let mut received = 0usize;
        for (index, raw) in raw_events.into_iter().enumerate() {
            received += 1;
            match raw.and_then(|raw| self.admit(caller, &raw, now).map(|event| (raw, event))) {
                Ok((raw, event)) => {
                    events.push(event);
                    if self.forwarder.is_some() {
                        valid.push(raw);
                    }
                }
                Err(reason) => rejected.push((index, reason)),
            }
        }
        let tally = self
            .submit(
                transport,
                caller,
                (&valid, events),
                received,
                started,
                &rejected,
            )
            .await?;
        Ok(BatchResult {
            // Batches are limited to far fewer than 2^32 events.
            accepted: u32::try_from(tally.accepted).unwrap_or(u32::MAX),
            duplicates: u32::try_from(tally.duplicates).unwrap_or(u32::MAX),
            rejections: rejected
                .into_iter()
                .map(|(index, reason)| Rejection {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    code: reason.code(),
                    message: reason.to_string(),
                })
                .collect(),
        })
    }

    /// Parses and checks a whole batch against `caller`'s grants, and submits it only when every
    /// event is valid: the all-or-nothing batch of a standard whose clients expect one (xAPI).
    /// The first invalid event refuses the batch, with nothing submitted; the caller records
    /// that refusal in its metrics.
    pub async fn ingest_whole(
        &self,
        transport: Transport,
        caller: &Caller,
        raw_events: &[RawEvent<'_>],
    ) -> Result<BatchResult, WholeRefusal> {
        let started = Instant::now();
        let now = Utc::now();
        let mut events = Vec::with_capacity(raw_events.len());
        for (index, raw) in raw_events.iter().enumerate() {
            match self.admit(caller, raw, now) {
                Ok(event) => events.push(event),
                Err(reason) => return Err(WholeRefusal::Invalid { index, reason }),
            }
        }
        let tally = self
            .submit(
                transport,
                caller,
                (raw_events, events),
                raw_events.len(),
                started,
                &[],
            )
            .await?;
        Ok(BatchResult {
            accepted: u32::try_from(tally.accepted).unwrap_or(u32::MAX),
            duplicates: u32::try_from(tally.duplicates).unwrap_or(u32::MAX),
            rejections: Vec::new(),
        })
    }

    /// Submits a batch's valid events, each with its wire form when forwarded (of `received`,
    /// the others `rejected`), and records the outcome in the metrics. Forwarded events are
    /// all accepted once Kafka has them: which are duplicates is known only where they count.
    async fn submit(
        &self,
        transport: Transport,
        caller: &Caller,
        (raw, events): (&[RawEvent<'_>], Vec<crate::event::Event>),
        received: usize,
        started: Instant,
        rejected: &[(usize, RejectReason)],
    ) -> Result<BatchTally, BatchRefusal> {
        let submitted = match &self.forwarder {
            Some(forwarder) => forwarder
                .forward(raw, &events)
                .await
                .map(|()| vec![Applied::Accepted; events.len()])
                .map_err(|error| BatchRefusal::Unforwarded(telemetry::chain(&error).to_string())),
            None => self
                .queue
                .submit(events, Some(caller.id().clone()))
                .await
                .map_err(BatchRefusal::from),
        };
        let outcomes = match submitted {
            Ok(outcomes) => outcomes,
            Err(refusal) => {
                telemetry::record_refused(transport, refusal.reason(), received);
                return Err(refusal);
            }
        };
        let mut tally = BatchTally {
            received: received as u64,
            ..BatchTally::default()
        };
        // The pipeline rejects nothing valid: each event is accepted or a duplicate.
        for outcome in outcomes {
            match outcome {
                Applied::Accepted => tally.accepted += 1,
                Applied::Duplicate { conflict } => {
                    tally.duplicates += 1;
                    tally.conflicts += u64::from(conflict);
                }
            }
        }
        let reasons: Vec<RejectReason> =
            rejected.iter().map(|(_, reason)| reason.clone()).collect();
        telemetry::record_batch(transport, tally, &reasons, started.elapsed());
        telemetry::record_credential_events(caller.id(), "accepted", tally.accepted);
        telemetry::record_credential_events(caller.id(), "duplicate", tally.duplicates);
        telemetry::record_credential_events(caller.id(), "rejected", reasons.len() as u64);
        Ok(tally)
    }

    /// Parses one event and checks it against the caller's grants and new-campaign quota.
    pub fn admit(
        &self,
        caller: &Caller,
        raw: &RawEvent<'_>,
        now: chrono::DateTime<Utc>,
    ) -> Result<crate::event::Event, RejectReason> {
        let event = self.parser.parse(raw, now)?;
        let names_campaign = !raw.campaign.trim().is_empty();
        caller.check_event(raw.source, &event.campaign, names_campaign)?;
        // A campaign neither registered nor seen is opened by this event: a credential opens
        // only so many a day.
        if names_campaign
            && caller.limits_new_campaigns()
            && self.figures.campaign_version(&event.campaign).is_none()
        {
            caller.open_campaign(&event.campaign, now.date_naive())?;
        }
        Ok(event)
    }
}
