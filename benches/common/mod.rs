//! What the core and durability benchmarks generate their inputs from, so that both measure the
//! same programme: the fixed seed, the batch size, the parser and aggregator settings of the
//! service's defaults, the registry's campaigns and how learners spread over them, and the
//! proportions of the funnel; and the reading of /proc/self/status both memory figures use.

use chrono_tz::Tz;
use rand::distr::weighted::WeightedIndex;

use suivi::aggregate::AggregatorSettings;
use suivi::config::{DEFAULT_CHAPTER_COUNT, DEFAULT_MAX_UNREGISTERED_CAMPAIGNS, DEFAULT_TIME_ZONE};
use suivi::event::EventParser;
use suivi::registry::Registry;

/// Every generator starts from this seed, so that every run measures the same events.
pub const SEED: u64 = 2021;
const PSEUDONYM_KEY: [u8; 32] = [7; 32];
/// Events per ingest batch, as a client (`suivi simulate`, for one) sends them.
pub const BATCH_EVENTS: usize = 1_000;

/// Learners who come through no partner's link, as a weight beside the partners' targets.
const DIRECT_WEIGHT: u64 = 100_000;
/// The weight of a partner that published no target.
const UNTARGETED_WEIGHT: u64 = 1_500;
/// Enrolled learners who start the course.
pub const START_RATE: f64 = 0.9;
/// Learners who start and go on to complete every chapter and be certified (the programme
/// published 60%).
pub const CERTIFY_RATE: f64 = 0.6;
/// Clicks that carry an anonymous browser id.
pub const VISITOR_RATE: f64 = 0.8;

pub fn settings() -> AggregatorSettings {
    AggregatorSettings {
        time_zone: DEFAULT_TIME_ZONE
            .parse::<Tz>()
            .expect("the default time zone is a valid IANA name"),
        chapter_count: DEFAULT_CHAPTER_COUNT,
        max_unregistered_campaigns: DEFAULT_MAX_UNREGISTERED_CAMPAIGNS,
    }
}

pub fn parser() -> EventParser {
    EventParser::new(DEFAULT_CHAPTER_COUNT, PSEUDONYM_KEY)
}

/// The registered campaign ids, to build aggregators with.
pub fn registered(registry: &Registry) -> Vec<String> {
    registry.campaigns.iter().map(|c| c.id.clone()).collect()
}

/// How learners spread over direct traffic (index 0) and the registry's campaigns (index
/// `i + 1` for the registry's `i`th): [`DIRECT_WEIGHT`], then each partner's target, or
/// [`UNTARGETED_WEIGHT`] without one.
pub fn campaign_spread(registry: &Registry) -> WeightedIndex<u64> {
    let weights = std::iter::once(DIRECT_WEIGHT).chain(
        registry
            .campaigns
            .iter()
            .map(|campaign| campaign.target.unwrap_or(UNTARGETED_WEIGHT)),
    );
    WeightedIndex::new(weights).expect("campaign weights are positive")
}

/// A field of /proc/self/status, in KiB: `VmRSS` (resident now) or `VmHWM` (resident at most).
pub fn status_kib(field: &str) -> u64 {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("/proc/self/status has no {field} in kB"))
}
