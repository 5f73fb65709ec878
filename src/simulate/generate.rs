//! The events that realise a [`Plan`]: each visitor's journey (clicks, enrolment, chapters,
//! certificate), dated within its campaign's window, kept compact until they are sent. Seeded:
//! the same seed and scale give the same events, ids included.

use std::ops::Range;

use chrono::NaiveDate;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::proto::{self};
use crate::registry::Registry;

use super::plan::{
    CampaignPlan, EVENT_STREAM, FIRST_HOUR, LAST_HOUR, Plan, SHUFFLE_STREAM, log_uniform,
};

/// A generated programme: its plan and its events, kept compact until they are sent.
#[derive(Debug)]
pub struct Simulation {
    pub(super) plan: Plan,
    /// Sets this run's learner and visitor ids apart from another seed's or scale's, so that two
    /// simulations sent to one service are two sets of people.
    id_prefix: u32,
    pub(super) events: Vec<SimulatedEvent>,
}

/// The programme as a list of `LearnerEvent`s, in per-learner order. Deterministic: the same
/// arguments give the same events, ids included.
pub fn generate(
    registry: &Registry,
    seed: u64,
    scale: f64,
    chapter_count: u8,
) -> Vec<proto::LearnerEvent> {
    Simulation::new(registry, seed, scale, chapter_count)
        .events()
        .collect()
}

// The generator: each visitor's journey, dated within its campaign's window.

/// After each click, the chance the visitor comes back through the link once more before
/// enrolling; with the bouncers, about two clicks per enrolment.
const REPEAT_CLICK_PROBABILITY: f64 = 0.2;
/// The chance a learner who will not be certified goes on to the next chapter: most drop out in
/// the first chapters.
const NEXT_CHAPTER_PROBABILITY: f64 = 0.8;
/// The chance a learner opens the course in the session they enrolled in.
const SAME_SESSION_START_PROBABILITY: f64 = 0.7;
/// A share of every campaign's learners arrive in the launch wave, its first three weeks.
const LAUNCH_WAVE_PROBABILITY: f64 = 0.3;
const LAUNCH_WAVE_MS: i64 = 21 * DAY_MS;

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

impl Simulation {
    /// Plans the programme of `registry` and generates its events, in per-learner order.
    pub fn new(registry: &Registry, seed: u64, scale: f64, chapter_count: u8) -> Simulation {
        let plan = Plan::new(registry, seed, scale);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(EVENT_STREAM);
        let mut generator = Generator {
            rng,
            chapter_count,
            events: Vec::with_capacity(estimated_events(&plan, chapter_count)),
            next_learner: 0,
            next_visitor: 0,
            journey: Vec::new(),
        };
        for (index, campaign) in (0u32..).zip(&plan.campaigns) {
            generator.campaign(index, campaign);
        }
        let mut prefix_input = seed.to_le_bytes().to_vec();
        prefix_input.extend_from_slice(&scale.to_bits().to_le_bytes());
        Simulation {
            // Truncating the hash to 32 bits is enough to tell runs apart.
            id_prefix: xxhash_rust::xxh3::xxh3_64(&prefix_input) as u32,
            events: generator.events,
            plan,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn num_events(&self) -> usize {
        self.events.len()
    }

    /// Moves the programme (its plan and every event) by whole days so that its last day is
    /// `last_day`: the published programme ended on 4 February 2021, and live pages and
    /// forecasts want one that ends yesterday. Events keep their calendar day's hours, so their
    /// day is still the same in UTC and in Paris; ids do not change.
    pub fn end_on(&mut self, last_day: NaiveDate) {
        let Some(end) = self.plan.campaigns.iter().map(|plan| plan.last_day).max() else {
            return;
        };
        let days = (last_day - end).num_days();
        let moved = |date: NaiveDate| {
            date.checked_add_signed(chrono::TimeDelta::days(days))
                .unwrap_or(date)
        };
        for plan in &mut self.plan.campaigns {
            plan.first_day = moved(plan.first_day);
            plan.last_day = moved(plan.last_day);
        }
        for event in &mut self.events {
            event.occurred_at_ms += days * DAY_MS;
        }
    }

    /// Puts the events in an order drawn from the seed, the same for every run of one seed. The
    /// events themselves, ids included, are those of the per-learner order.
    pub fn shuffle(&mut self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.plan.seed);
        rng.set_stream(SHUFFLE_STREAM);
        self.events.shuffle(&mut rng);
    }

    /// The events as `LearnerEvent`s, in the simulation's order.
    pub fn events(&self) -> impl Iterator<Item = proto::LearnerEvent> + '_ {
        self.events.iter().map(|event| self.learner_event(event))
    }

    /// The id of the event at `index` in the simulation's order, as it is sent.
    pub(super) fn event_id(&self, index: usize) -> Option<String> {
        self.events.get(index).map(|event| uuid(event.id))
    }

    pub(super) fn batch(&self, range: Range<usize>) -> Vec<proto::LearnerEvent> {
        self.events[range]
            .iter()
            .map(|event| self.learner_event(event))
            .collect()
    }

    fn learner_event(&self, event: &SimulatedEvent) -> proto::LearnerEvent {
        // Events are only ever made with the index of a campaign of this simulation's plan.
        let campaign = &self.plan.campaigns[event.campaign as usize];
        let (kind, chapter) = match event.step {
            Step::Click => (proto::EventKind::LinkClicked, 0),
            Step::Enrolled => (proto::EventKind::Enrolled, 0),
            Step::Started => (proto::EventKind::CourseStarted, 0),
            Step::Chapter(chapter) => (proto::EventKind::ChapterCompleted, chapter),
            Step::Certified => (proto::EventKind::Certified, 0),
        };
        let learner_id = format!("{:08x}-{}", self.id_prefix, event.learner);
        let (learner_id, visitor_id) = match event.step {
            // A platform where learners are signed in knows who clicked: the click is tagged.
            Step::Click => (
                if event.learner != NOT_A_LEARNER && campaign.source == TAGS_CLICKS {
                    learner_id
                } else {
                    String::new()
                },
                format!("{:08x}-v{}", self.id_prefix, event.visitor),
            ),
            _ => (learner_id, String::new()),
        };
        proto::LearnerEvent {
            event_id: uuid(event.id),
            kind: kind as i32,
            campaign: campaign.campaign.clone(),
            source: campaign.source.clone(),
            learner_id,
            visitor_id,
            occurred_at: Some(prost_types::Timestamp {
                seconds: event.occurred_at_ms.div_euclid(1000),
                // Below 1,000,000,000, so it fits.
                nanos: (event.occurred_at_ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
            chapter: u32::from(chapter),
        }
    }
}

/// The platform whose learners are signed in when they follow the tracking link, like the
/// Gendarmerie's GendForm3.0: its clicks carry the learner's id (tagged clicks), and they name
/// the learner's campaign for the statements that name none.
pub const TAGS_CLICKS: &str = "gendform3";

/// The learner number of a visitor who never enrols.
const NOT_A_LEARNER: u64 = u64::MAX;

/// One event, compact (48 bytes) until it is sent: the strings are made per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SimulatedEvent {
    /// 128 random bits, formatted as a UUID.
    pub(super) id: [u64; 2],
    pub(super) occurred_at_ms: i64,
    /// The visitor's number, which clicks carry.
    pub(super) visitor: u64,
    /// The learner's number, which progress events and tagged clicks carry; [`NOT_A_LEARNER`]
    /// for a visitor who never enrols.
    pub(super) learner: u64,
    /// The index of its campaign in the plan.
    pub(super) campaign: u32,
    pub(super) step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Click,
    Enrolled,
    Started,
    Chapter(u8),
    Certified,
}

/// How far a visitor goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Certified,
    /// Starts, completes a few chapters, and stops.
    DropsOut,
    /// Enrols and never starts.
    NeverStarts,
    /// Clicks and never enrols.
    Bounces,
}

struct Generator {
    rng: ChaCha8Rng,
    chapter_count: u8,
    events: Vec<SimulatedEvent>,
    /// Learners and visitors are numbered over the whole programme, so that no two campaigns
    /// share one.
    next_learner: u64,
    next_visitor: u64,
    /// The current visitor's steps, with their offsets from its first click, reused.
    journey: Vec<(Step, i64)>,
}

impl Generator {
    /// Generates the visitors of one campaign, their roles interleaved at random so that every
    /// part of the per-learner order looks alike.
    fn campaign(&mut self, index: u32, plan: &CampaignPlan) {
        let window_start = plan
            .first_day
            .and_time(FIRST_HOUR)
            .and_utc()
            .timestamp_millis();
        let window_end = plan
            .last_day
            .and_time(LAST_HOUR)
            .and_utc()
            .timestamp_millis()
            .max(window_start);
        // The plan keeps certified ≤ started ≤ enrolled; saturating keeps a hand-made plan from
        // failing.
        let mut left = [
            (Role::Certified, plan.certified),
            (Role::DropsOut, plan.started.saturating_sub(plan.certified)),
            (
                Role::NeverStarts,
                plan.enrolled.saturating_sub(plan.started),
            ),
            (Role::Bounces, plan.bouncers),
        ];
        loop {
            let total: u64 = left.iter().map(|(_, count)| count).sum();
            if total == 0 {
                break;
            }
            // Drawing a role in proportion to what is left of each gives every order of roles
            // the same chance, and exactly the planned count of each.
            let mut draw = self.rng.random_range(0..total);
            for (role, count) in &mut left {
                if draw < *count {
                    *count -= 1;
                    self.visitor(index, *role, window_start, window_end);
                    break;
                }
                draw -= *count;
            }
        }
    }

    /// Generates one visitor's journey, then places it in the campaign's window.
    fn visitor(&mut self, campaign: u32, role: Role, window_start: i64, window_end: i64) {
        self.journey.clear();
        let mut offset = 0;
        self.journey.push((Step::Click, offset));
        while self.rng.random_bool(REPEAT_CLICK_PROBABILITY) {
            offset += self.gap(10 * MINUTE_MS, 3 * DAY_MS);
            self.journey.push((Step::Click, offset));
        }
        if role != Role::Bounces {
            offset += self.gap(MINUTE_MS, 2 * HOUR_MS);
            self.journey.push((Step::Enrolled, offset));
        }
        if matches!(role, Role::Certified | Role::DropsOut) {
            offset += if self.rng.random_bool(SAME_SESSION_START_PROBABILITY) {
                self.gap(MINUTE_MS, HOUR_MS)
            } else {
                self.gap(HOUR_MS, 10 * DAY_MS)
            };
            self.journey.push((Step::Started, offset));
            let chapters = if role == Role::Certified {
                self.chapter_count
            } else {
                self.chapters_before_dropping_out()
            };
            for chapter in 1..=chapters {
                offset += self.gap(20 * MINUTE_MS, 7 * DAY_MS);
                self.journey.push((Step::Chapter(chapter), offset));
            }
        }
        if role == Role::Certified {
            // The certificate comes with the last chapter's quiz.
            offset += self.gap(SECOND_MS, 5 * MINUTE_MS);
            self.journey.push((Step::Certified, offset));
        }

        let length = offset;
        let span = window_end - window_start;
        let journey_start = if length <= span {
            let slack = span - length;
            let latest = if self.rng.random_bool(LAUNCH_WAVE_PROBABILITY) {
                slack.min(LAUNCH_WAVE_MS)
            } else {
                slack
            };
            window_start + self.rng.random_range(0..=latest)
        } else {
            window_start
        };
        let visitor = self.next_visitor;
        self.next_visitor += 1;
        let learner = if role == Role::Bounces {
            NOT_A_LEARNER
        } else {
            self.next_learner += 1;
            self.next_learner - 1
        };
        for &(step, offset) in &self.journey {
            // A journey longer than its window is compressed into it, keeping its order.
            let offset = if length <= span {
                offset
            } else {
                (i128::from(offset) * i128::from(span) / i128::from(length)) as i64
            };
            self.events.push(SimulatedEvent {
                id: [self.rng.random(), self.rng.random()],
                occurred_at_ms: journey_start + offset,
                visitor,
                learner,
                campaign,
                step,
            });
        }
    }

    /// Chapters completed by a starter who is not certified: 0 to all but one.
    fn chapters_before_dropping_out(&mut self) -> u8 {
        let most = self.chapter_count.saturating_sub(1);
        let mut completed = 0;
        while completed < most && self.rng.random_bool(NEXT_CHAPTER_PROBABILITY) {
            completed += 1;
        }
        completed
    }

    /// A pause between two steps, log-uniform between `shortest` and `longest` milliseconds:
    /// minutes as likely as days.
    fn gap(&mut self, shortest: i64, longest: i64) -> i64 {
        log_uniform(&mut self.rng, (shortest as f64, longest as f64)).round() as i64
    }
}

/// Events the plan will produce, about, to allocate once.
fn estimated_events(plan: &Plan, chapter_count: u8) -> usize {
    let estimate: u64 = plan
        .campaigns
        .iter()
        .map(|campaign| {
            let visitors = campaign.enrolled + campaign.bouncers;
            let progress = campaign.enrolled
                + campaign.started
                + campaign.certified * (u64::from(chapter_count) + 1)
                + campaign.started.saturating_sub(campaign.certified) * 4;
            visitors + visitors / 4 + progress
        })
        .sum();
    // An estimate past the address space starts empty: the vector then grows as far as it can.
    usize::try_from(estimate).unwrap_or(0)
}

/// Formats 128 random bits as a version-4 UUID, the ids platforms usually send.
pub(super) fn uuid([high, low]: [u64; 2]) -> String {
    let high = (high & !0xF000) | 0x4000;
    let low = (low & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xFFFF,
        high & 0xFFFF,
        low >> 48,
        low & 0xFFFF_FFFF_FFFF
    )
}
