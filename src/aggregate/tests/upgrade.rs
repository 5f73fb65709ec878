//! Checkpoints of a format before the learners' records (4): made here from an aggregator as
//! those formats kept it — each learner in each campaign it counts in, in the totals, and in
//! the attributions — they restore the same aggregator, and one whose learners cannot be told
//! apart (older than attribution) is refused clearly.

use super::properties::*;
use super::release::whole_state;
use super::*;
use crate::proto::storage::Checkpoint;

fn push_progress(stored: &mut StoredCampaign, LearnerKey(key): LearnerKey, progress: Progress) {
    stored.learner_keys.extend_from_slice(&key);
    stored
        .enrolled
        .push(progress.enrolled.map_or(0, Day::number));
    stored.started.push(progress.started.map_or(0, Day::number));
    stored
        .certified
        .push(progress.certified.map_or(0, Day::number));
    stored.chapters.push(progress.chapters);
}

fn number(day: Option<Day>) -> u32 {
    day.map_or(0, Day::number)
}

impl Aggregator {
    /// The checkpoint (its ids in itself) as a suivi of format `format` (below 4) wrote it.
    pub(crate) fn older_checkpoint(&self, journal_position: u64, format: u32) -> Checkpoint {
        older_checkpoint(self, journal_position, format)
    }
}

/// `aggregator`'s checkpoint as a suivi of format `format` (below 4) wrote it.
fn older_checkpoint(aggregator: &Aggregator, journal_position: u64, format: u32) -> Checkpoint {
    let mut checkpoint = aggregator
        .checkpoint(journal_position, Vec::new())
        .expect("the runs read");
    checkpoint.format_version = format;
    for column in [
        &mut checkpoint.named_slots,
        &mut checkpoint.named_enrolled,
        &mut checkpoint.named_started,
        &mut checkpoint.named_certified,
        &mut checkpoint.named_chapters,
        &mut checkpoint.learner_named,
        &mut checkpoint.loose_enrolled,
        &mut checkpoint.loose_started,
        &mut checkpoint.loose_certified,
        &mut checkpoint.loose_chapters,
    ] {
        column.clear();
    }
    checkpoint.named_at.clear();
    checkpoint.named_ids.clear();
    checkpoint.learner_keys.clear();
    checkpoint.learner_loose.clear();
    let direct = aggregator.index.get(DIRECT_CAMPAIGN).copied();
    let mut totals = checkpoint.totals.take().unwrap_or_default();
    let mut counted = Vec::new();
    for (learner, record) in aggregator.learners.iter() {
        let total = record.counted(direct, &mut counted);
        for (slot, progress) in &counted {
            push_progress(
                &mut checkpoint.campaigns[usize::from(*slot)],
                *learner,
                *progress,
            );
        }
        if !total.is_empty() {
            push_progress(&mut totals, *learner, total);
        }
        let full = record.to_full();
        for named in &full.named {
            checkpoint.named_learners.extend_from_slice(&learner.0);
            checkpoint.named_at.push(named.at());
            checkpoint.named_ids.extend_from_slice(&named.id());
            checkpoint.named_slots.push(u32::from(named.slot));
        }
        if !full.loose.is_empty() {
            let own = full
                .first()
                .and_then(|first| full.named.iter().find(|named| named.slot == first))
                .map_or(Progress::default(), |named| named.own());
            checkpoint.loose_learners.extend_from_slice(&learner.0);
            checkpoint.loose_enrolled.push(number(full.loose.enrolled));
            checkpoint.loose_started.push(number(full.loose.started));
            checkpoint
                .loose_certified
                .push(number(full.loose.certified));
            checkpoint.loose_chapters.push(full.loose.chapters);
            checkpoint.own_enrolled.push(number(own.enrolled));
            checkpoint.own_started.push(number(own.started));
            checkpoint.own_certified.push(number(own.certified));
            checkpoint.own_chapters.push(own.chapters);
        }
    }
    checkpoint.totals = Some(totals);
    checkpoint
}

/// `checkpoint` as a suivi older than attribution wrote it: no attribution columns.
fn before_attribution(mut checkpoint: Checkpoint) -> Checkpoint {
    checkpoint.named_learners.clear();
    checkpoint.named_at.clear();
    checkpoint.named_ids.clear();
    checkpoint.named_slots.clear();
    checkpoint.loose_learners.clear();
    for column in [
        &mut checkpoint.loose_enrolled,
        &mut checkpoint.loose_started,
        &mut checkpoint.loose_certified,
        &mut checkpoint.loose_chapters,
        &mut checkpoint.own_enrolled,
        &mut checkpoint.own_started,
        &mut checkpoint.own_certified,
        &mut checkpoint.own_chapters,
    ] {
        column.clear();
    }
    checkpoint
}

fn restore(checkpoint: &Checkpoint) -> anyhow::Result<Aggregator> {
    Aggregator::restore(property_settings(), [], checkpoint, &[], Default::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_checkpoint_of_an_older_format_restores_the_same_aggregator(
        events in event_set(0..60),
        format in 0..4u32,
    ) {
        let aggregator = aggregate(&events)?;
        let restored = restore(&aggregator.older_checkpoint(7, format))
            .map_err(|error| TestCaseError::fail(format!("{error:#}")))?;
        prop_assert_eq!(whole_state(&restored), whole_state(&aggregator));
    }

    #[test]
    fn attribution_survives_an_older_format(
        events in attribution_scenario(),
    ) {
        let aggregator = aggregate(&events)?;
        let restored = restore(&aggregator.older_checkpoint(7, 3))
            .map_err(|error| TestCaseError::fail(format!("{error:#}")))?;
        prop_assert_eq!(whole_state(&restored), whole_state(&aggregator));
    }
}

#[test]
fn a_checkpoint_older_than_attribution_loads_unless_a_learner_is_both_direct_and_named() {
    let parser = EventParser::new(settings().chapter_count, [0x11; 32]);
    let mut named_only = Aggregator::new(settings(), []);
    for (_, event) in parse_events(
        &parser,
        "
        e1 enrolled  gendarmerie gf/alice 2020-10-05
        e2 certified la-poste    gf/alice 2020-10-07
        e3 enrolled  direct      gf/bob   2020-10-06
        ",
    ) {
        named_only.apply(&event).expect("a campaign slot");
    }
    let old = before_attribution(named_only.older_checkpoint(7, 1));
    let restored = Aggregator::restore(settings(), [], &old, &[], Default::default())
        .expect("learners apart restore");
    assert_eq!(render_state(&restored), render_state(&named_only));

    // A learner counted in `direct` and in a campaign, as a suivi before attribution counted
    // her: her events naming no campaign cannot be told from those her campaign holds.
    let mut mixed = old;
    let slot_of = |campaign: &str| {
        mixed
            .campaigns
            .iter()
            .position(|stored| stored.campaign == campaign)
            .expect("held")
    };
    let (gendarmerie, direct) = (slot_of("gendarmerie"), slot_of(DIRECT_CAMPAIGN));
    let alice = LearnerKey(
        mixed.campaigns[gendarmerie].learner_keys[..3]
            .try_into()
            .expect("alice"),
    );
    let started = Progress {
        enrolled: Day::from_number(mixed.campaigns[gendarmerie].enrolled[0]),
        ..Progress::default()
    };
    push_progress(&mut mixed.campaigns[direct], alice, started);
    let error = Aggregator::restore(settings(), [], &mixed, &[], Default::default())
        .expect_err("a learner both direct and named cannot be told")
        .to_string();
    assert!(error.contains("predates attribution"), "{error}");
}
