//! The simulated programme's [`Plan`]: how many distinct learners of each campaign reach each
//! stage, so that the counters suivi computes equal the published figures exactly. Published
//! figures come from the registry; seeded random choices fill in the rest. No events here.

use std::fmt;

use chrono::{NaiveDate, NaiveTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::registry::Registry;

/// How many learners each campaign gets, and so the exact figures suivi will count once every
/// event is in.
///
/// Campaigns with published figures (the Gendarmerie) get them, scaled: all their enrollees
/// click, 97% of them start, and the published number certify. The programme's published
/// started and certified learners that remain are spread over the other registered campaigns
/// and direct traffic (a fifth of the remainder) by the largest-remainder method, so the sums are
/// exact: a campaign with a target weighs a fifth of its target, one without a seeded random
/// weight between 50 and 2,000 (log-uniform). Certificates are spread the same way, each
/// campaign's starters weighted by a seeded propensity between 0.5 and 1.5. Elsewhere 10% of
/// enrollees never start. Every campaign, direct traffic included (its clicks are visits of the
/// course page without a campaign), has 60 visitors who click and never enrol per 100 enrollees.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The seed the plan's random choices (and the events') are drawn from.
    pub seed: u64,
    /// The multiplier of every published figure.
    pub scale: f64,
    /// Distinct learners who start the course, over the whole programme.
    pub started: u64,
    /// Distinct learners who complete every chapter and are certified, over the whole programme.
    pub certified: u64,
    /// The registered campaigns in registry order, then direct traffic.
    pub campaigns: Vec<CampaignPlan>,
}

/// One campaign's share of the programme: exactly this many distinct learners reach each stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignPlan {
    /// The UTM campaign; empty for direct traffic.
    pub campaign: String,
    /// The platform its events come from.
    pub source: String,
    /// Its events are dated from this day to `last_day`, both included (in UTC and in Paris).
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// Whether `enrolled` and `certified` are the registry's published figures, scaled.
    pub published: bool,
    pub enrolled: u64,
    pub started: u64,
    pub certified: u64,
    /// Visitors who click the campaign's link and never enrol.
    pub bouncers: u64,
}

// The plan: how many learners reach each stage, per campaign. Published figures come from the
// registry; these choices fill in the rest.

/// The programme's published figures (product design §1), for a registry without them.
const DEFAULT_PUBLISHED_STARTED: u64 = 110_000;
const DEFAULT_PUBLISHED_CERTIFIED: u64 = 67_000;
/// The programme published its figures on this day: no event is dated after it.
const PROGRAMME_FIGURES_PUBLISHED_ON: NaiveDate = date(2021, 2, 4);
/// The Gendarmerie published its figures on this day: the campaigns with published figures end
/// here.
const PARTNER_FIGURES_PUBLISHED_ON: NaiveDate = date(2021, 1, 25);
/// The start of campaigns without a published launch date.
const DEFAULT_LAUNCH: NaiveDate = date(2020, 9, 1);
/// Events are dated between these hours (UTC) of each day, so that their calendar day is the
/// same in UTC and in Paris (UTC+1 in winter, UTC+2 in summer).
pub(super) const FIRST_HOUR: NaiveTime = time(6);
pub(super) const LAST_HOUR: NaiveTime = time(21);
/// The course platform, the source of every campaign that names no platform of its own.
pub(super) const COURSE_PLATFORM: &str = "openclassrooms";

/// Share of a published campaign's enrollees who start: staff enrolled by their employer mostly
/// do.
const PUBLISHED_STARTED_PERCENT: u64 = 97;
/// The Gendarmerie's certified per enrolled (56,000 of 65,000), for a campaign that publishes
/// only one of the two figures.
const PUBLISHED_CERTIFIED_PER_ENROLLED: (u64, u64) = (56, 65);
/// Share of enrollees who start elsewhere: a tenth sign up and never open the course.
const STARTED_PERCENT: u64 = 90;
/// A campaign with a target weighs this share of it: partners had reached a fifth of their
/// commitment by the time of the figures.
const TARGET_REACHED_PERCENT: u64 = 20;
/// The weight of a campaign without a target, drawn log-uniformly: a few large partners, many
/// small ones.
const UNTARGETED_WEIGHTS: (f64, f64) = (50.0, 2_000.0);
/// Share of the learners outside published campaigns who came without a campaign.
const DIRECT_PERCENT: u64 = 20;
/// A campaign's starters weigh this many percent each when certificates are shared out: some
/// partners follow their learners up, others do not.
const CERTIFICATION_PROPENSITY_PERCENT: std::ops::RangeInclusive<u64> = 50..=150;
/// Visitors who click a campaign's link and never enrol, per 100 enrollees.
const BOUNCERS_PERCENT: u64 = 60;

/// The random streams of one seed: the plan, the events and the shuffle draw from separate
/// streams, so that shuffling (or a change in the plan's draws) leaves the others unchanged.
pub(super) const PLAN_STREAM: u64 = 0;
pub(super) const EVENT_STREAM: u64 = 1;
pub(super) const SHUFFLE_STREAM: u64 = 2;

impl Plan {
    /// Plans the programme of `registry` at `scale` (see [`Plan`] for the choices). The figures
    /// the registry publishes are reproduced exactly, rounded to the nearest learner; where they
    /// contradict each other (a campaign publishing more than the programme), the programme's
    /// figures are raised to fit, and the plan says so in its numbers.
    pub fn new(registry: &Registry, seed: u64, scale: f64) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(PLAN_STREAM);
        // `as` saturates, so a negative or NaN scale plans an empty programme instead of failing.
        let scaled = |figure: u64| (figure as f64 * scale).round() as u64;

        let mut campaigns = Vec::with_capacity(registry.campaigns.len() + 1);
        // The campaigns that share the programme's remaining learners, with their weights.
        let mut open: Vec<(usize, u64)> = Vec::new();
        for campaign in &registry.campaigns {
            let first_day = campaign.launched.unwrap_or(DEFAULT_LAUNCH);
            let mut plan = CampaignPlan {
                campaign: campaign.id.clone(),
                source: campaign
                    .platform
                    .clone()
                    .unwrap_or_else(|| COURSE_PLATFORM.to_owned()),
                first_day,
                last_day: PROGRAMME_FIGURES_PUBLISHED_ON.max(first_day),
                published: false,
                enrolled: 0,
                started: 0,
                certified: 0,
                bouncers: 0,
            };
            let enrolled = campaign.published_enrolled.map(scaled);
            let certified = campaign.published_certified.map(scaled);
            match (enrolled, certified) {
                (None, None) => {
                    let weight = match campaign.target {
                        Some(target) => part(target, TARGET_REACHED_PERCENT, 100).max(1),
                        None => log_uniform(&mut rng, UNTARGETED_WEIGHTS).round() as u64,
                    };
                    open.push((campaigns.len(), weight));
                }
                (enrolled, certified) => {
                    // A campaign that publishes one figure only gets the other from the
                    // Gendarmerie's ratio.
                    let (certified_per, enrolled_per) = PUBLISHED_CERTIFIED_PER_ENROLLED;
                    let certified = certified
                        .or(enrolled.map(|enrolled| part(enrolled, certified_per, enrolled_per)))
                        .unwrap_or_default();
                    let enrolled = enrolled
                        .unwrap_or_else(|| part(certified, enrolled_per, certified_per))
                        .max(certified);
                    plan.published = true;
                    plan.last_day = PARTNER_FIGURES_PUBLISHED_ON.max(first_day);
                    plan.enrolled = enrolled;
                    plan.started =
                        part(enrolled, PUBLISHED_STARTED_PERCENT, 100).clamp(certified, enrolled);
                    plan.certified = certified;
                }
            }
            campaigns.push(plan);
        }
        let campaign_weights: u64 = open.iter().map(|(_, weight)| weight).sum();
        open.push((
            campaigns.len(),
            part(campaign_weights, DIRECT_PERCENT, 100 - DIRECT_PERCENT).max(1),
        ));
        campaigns.push(CampaignPlan {
            campaign: String::new(),
            source: COURSE_PLATFORM.to_owned(),
            first_day: DEFAULT_LAUNCH,
            last_day: PROGRAMME_FIGURES_PUBLISHED_ON,
            published: false,
            enrolled: 0,
            started: 0,
            certified: 0,
            bouncers: 0,
        });

        let published_started: u64 = campaigns.iter().map(|c| c.started).sum();
        let published_certified: u64 = campaigns.iter().map(|c| c.certified).sum();
        let programme = &registry.programme;
        let certified = scaled(
            programme
                .published_certified
                .unwrap_or(DEFAULT_PUBLISHED_CERTIFIED),
        )
        .max(published_certified);
        let started = scaled(
            programme
                .published_started
                .unwrap_or(DEFAULT_PUBLISHED_STARTED),
        )
        .max(published_started + (certified - published_certified));

        let weights: Vec<u64> = open.iter().map(|(_, weight)| *weight).collect();
        let started_parts = apportion(
            started - published_started,
            &weights,
            &vec![u64::MAX; open.len()],
        );
        let propensities: Vec<u64> = started_parts
            .iter()
            .map(|started| {
                started.saturating_mul(rng.random_range(CERTIFICATION_PROPENSITY_PERCENT))
            })
            .collect();
        let certified_parts = apportion(
            certified - published_certified,
            &propensities,
            &started_parts,
        );
        for (((index, _), started), certified) in
            open.iter().zip(started_parts).zip(certified_parts)
        {
            let plan = &mut campaigns[*index];
            plan.started = started;
            plan.certified = certified;
            plan.enrolled = part(started, 100, STARTED_PERCENT);
        }
        for plan in &mut campaigns {
            plan.bouncers = part(plan.enrolled, BOUNCERS_PERCENT, 100);
        }
        Plan {
            seed,
            scale,
            started,
            certified,
            campaigns,
        }
    }

    /// The plan of `campaign` (the empty string for direct traffic).
    pub fn campaign(&self, campaign: &str) -> Option<&CampaignPlan> {
        self.campaigns.iter().find(|plan| plan.campaign == campaign)
    }

    /// Distinct learners who enrol, over the whole programme.
    pub fn enrolled(&self) -> u64 {
        self.campaigns.iter().map(|plan| plan.enrolled).sum()
    }

    /// The figures to check against suivi's: the totals, and every campaign with published ones.
    pub fn expected_figures(&self) -> String {
        let mut figures = format!(
            "totals started {}, certified {}",
            self.started, self.certified
        );
        for plan in self.campaigns.iter().filter(|plan| plan.published) {
            figures += &format!(
                "; {} enrolled {}, certified {}",
                plan.campaign, plan.enrolled, plan.certified
            );
        }
        figures
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan (seed {}, scale {}): {} learners enrol, {} start and {} are certified, over {} \
             campaigns and direct traffic",
            self.seed,
            self.scale,
            self.enrolled(),
            self.started,
            self.certified,
            self.campaigns.len() - 1
        )?;
        for plan in &self.campaigns {
            if plan.published || plan.campaign.is_empty() {
                writeln!(
                    f,
                    "  {}{}: {} enrol, {} start, {} are certified, from {} to {}",
                    if plan.campaign.is_empty() {
                        "direct traffic"
                    } else {
                        &plan.campaign
                    },
                    if plan.published {
                        " (published figures)"
                    } else {
                        ""
                    },
                    plan.enrolled,
                    plan.started,
                    plan.certified,
                    plan.first_day,
                    plan.last_day
                )?;
            }
        }
        let others = self
            .campaigns
            .iter()
            .filter(|plan| !plan.published && !plan.campaign.is_empty());
        let (count, enrolled, started, certified) =
            others.fold((0, 0, 0, 0), |(n, e, s, c), plan| {
                (
                    n + 1,
                    e + plan.enrolled,
                    s + plan.started,
                    c + plan.certified,
                )
            });
        write!(
            f,
            "  the other {count} campaigns: {enrolled} enrol, {started} start, {certified} are \
             certified"
        )
    }
}

/// Splits `total` into parts proportional to `weights` by the largest-remainder method (ties to
/// the first), none over its cap: the parts sum to `total` exactly whenever the caps allow it.
/// A part that would pass its cap gets the cap, and the rest is split again among the others.
pub(super) fn apportion(total: u64, weights: &[u64], caps: &[u64]) -> Vec<u64> {
    let mut parts = vec![0; weights.len()];
    let mut open: Vec<usize> = (0..weights.len()).filter(|&i| caps[i] > 0).collect();
    let mut left = total;
    while left > 0 && !open.is_empty() {
        // When every open weight is zero, the open parts share equally.
        let equal = open.iter().all(|&i| weights[i] == 0);
        let weight = |i: usize| u128::from(if equal { 1 } else { weights[i] });
        let weight_sum: u128 = open.iter().map(|&i| weight(i)).sum();
        let mut quotas: Vec<(usize, u64, u128)> = open
            .iter()
            .map(|&i| {
                let exact = u128::from(left) * weight(i);
                // A quotient of at most `left`, so it fits.
                (i, (exact / weight_sum) as u64, exact % weight_sum)
            })
            .collect();
        let floors: u64 = quotas.iter().map(|(_, quota, _)| quota).sum();
        quotas.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        // Fewer than `open.len()` units are left after the floors.
        for (_, quota, _) in quotas.iter_mut().take((left - floors) as usize) {
            *quota += 1;
        }
        let over: Vec<usize> = quotas
            .iter()
            .filter(|(i, quota, _)| *quota > caps[*i])
            .map(|(i, _, _)| *i)
            .collect();
        if over.is_empty() {
            for (i, quota, _) in quotas {
                parts[i] = quota;
            }
            return parts;
        }
        for i in over {
            parts[i] = caps[i];
            left -= caps[i];
            open.retain(|&j| j != i);
        }
    }
    parts
}

/// `value × numerator / denominator`, rounded half up, without overflow.
fn part(value: u64, numerator: u64, denominator: u64) -> u64 {
    let exact = u128::from(value) * u128::from(numerator);
    let denominator = u128::from(denominator.max(1));
    u64::try_from((exact + denominator / 2) / denominator).unwrap_or(u64::MAX)
}

/// A number between `low` and `high` whose logarithm is uniform.
pub(super) fn log_uniform(rng: &mut ChaCha8Rng, (low, high): (f64, f64)) -> f64 {
    (low.ln() + rng.random::<f64>() * (high.ln() - low.ln())).exp()
}

pub(super) const fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(year, month, day) {
        Some(date) => date,
        // Evaluated at compile time for constants only: a wrong date fails the build.
        None => panic!("invalid date constant"),
    }
}

const fn time(hour: u32) -> NaiveTime {
    match NaiveTime::from_hms_opt(hour, 0, 0) {
        Some(time) => time,
        // Evaluated at compile time for constants only: a wrong hour fails the build.
        None => panic!("invalid time constant"),
    }
}
