//! The outbox, the order records are applied in, and the shard board.

use chrono::{TimeZone, Utc};

use super::*;
use crate::registry::Registry;

fn counts(enrolled: u64) -> Counts {
    Counts {
        enrolled,
        chapters_completed: vec![0; 12],
        ..Counts::default()
    }
}

fn change(campaign: &str, enrolled: u64, day: Day) -> CampaignChange {
    CampaignChange {
        campaign: campaign.to_owned(),
        counts: counts(enrolled),
        days: vec![(
            day,
            DayCounts {
                enrolled,
                ..DayCounts::default()
            },
        )],
    }
}

fn figures() -> Figures {
    let registry = Registry::load(None).expect("the embedded registry");
    Figures::new(&registry, 12, Utc::now())
}

fn day() -> Day {
    Day::from_date(chrono::NaiveDate::from_ymd_opt(2026, 3, 1).expect("a date")).expect("a day")
}

#[test]
fn the_outbox_keeps_the_latest_record_of_each_key_and_heads_of_owned_shards() {
    let outbox = Outbox::new(3, "one".to_owned());
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    outbox.own(1, true, 0);
    outbox.put(1, 5, &[change("gendarmerie", 1, day())], now);
    outbox.put(1, 9, &[change("gendarmerie", 2, day())], now);
    // Shard 2 is not owned: its changes are sent, it has no head.
    outbox.put(2, 4, &[change("gendarmerie", 7, day())], now);
    let mut records = outbox.take(false, now);
    records.sort_by_key(|record| (record.shard, record.key()));
    /// (shard, position, enrolled in the counts, enrolled on the day, a head).
    type Summary = (usize, i64, Option<u64>, Option<u64>, bool);
    let summary: Vec<Summary> = records
        .iter()
        .map(|record| {
            (
                record.shard,
                record.position,
                record.counts.as_ref().map(|counts| counts.enrolled),
                record.day_counts.map(|day| day.enrolled),
                record.campaign.is_none(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 9, None, None, true),
            (1, 9, Some(2), None, false),
            (1, 9, None, Some(2), false),
            (2, 4, Some(7), None, false),
            (2, 4, None, Some(7), false),
        ]
    );
    // Nothing changed: nothing to send, but a heartbeat sends the owned shard's head.
    assert!(outbox.take(false, now).is_empty());
    let beat = outbox.take(true, now);
    assert_eq!(beat.len(), 1);
    assert_eq!((beat[0].shard, beat[0].position), (1, 9));
    // Put back after a failed send: kept unless a later record of the key came.
    outbox.put(1, 12, &[change("gendarmerie", 3, day())], now);
    outbox.put_back(records);
    let again = outbox.take(false, now);
    let counts: Vec<(usize, i64)> = again
        .iter()
        .filter(|record| record.counts.is_some())
        .map(|record| (record.shard, record.position))
        .collect();
    assert!(
        counts.contains(&(1, 12)) && counts.contains(&(2, 4)),
        "{counts:?}"
    );
    assert!(!counts.contains(&(1, 9)), "{counts:?}");
}

#[test]
fn records_read_in_any_order_show_each_shards_latest_partials_summed() {
    let outbox = Outbox::new(2, "one".to_owned());
    let now = Utc::now();
    // Shard 0 made by a former owner up to position 20, then by a new owner catching up from
    // 0: its records at 10 come after the ones at 20 and change nothing.
    outbox.put(0, 20, &[change("gendarmerie", 5, day())], now);
    outbox.put(1, 7, &[change("gendarmerie", 3, day())], now);
    let first = outbox.take(false, now);
    outbox.put(0, 10, &[change("gendarmerie", 2, day())], now);
    let late = outbox.take(false, now);
    let figures = figures();
    for record in first.iter().chain(&late) {
        record.clone().apply(&figures, now);
    }
    let campaign = figures.campaign("gendarmerie").expect("registered");
    assert_eq!(campaign.enrolled, 8);
    let timeline = figures.timeline("gendarmerie", None, None).expect("known");
    assert_eq!(timeline[0].enrolled, 8);
    assert!(
        late.iter()
            .all(|record| record.campaign.is_none() || record.superseded(&figures))
    );
    // The same records read again change nothing; a later one replaces its shard's part.
    for record in first.iter().chain(&late) {
        record.clone().apply(&figures, now);
    }
    outbox.put(0, 30, &[change("gendarmerie", 6, day())], now);
    for record in outbox.take(false, now) {
        record.apply(&figures, now);
    }
    assert_eq!(
        figures
            .campaign("gendarmerie")
            .expect("registered")
            .enrolled,
        9
    );
}

#[test]
fn a_shards_head_on_the_board_is_its_latest_and_the_lag_is_the_rest_of_its_partitions() {
    let board = ShardBoard::new(2);
    let at = |seconds| Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, seconds).unwrap();
    let head = |position, seconds, instance: &str| Record {
        shard: 1,
        position,
        as_of: at(seconds),
        instance: instance.to_owned(),
        campaign: None,
        counts: None,
        day: None,
        day_counts: None,
    };
    board.head(&head(50, 1, "one"));
    board.head(&head(40, 9, "two"));
    board.look(&[Some(0), Some(80)], &[false, true], at(11));
    let status = &board.statuses()[1];
    assert_eq!(
        (
            status.owner.as_str(),
            status.position,
            status.end,
            status.lag,
            status.owned_here
        ),
        ("one", 50, 80, 30, true)
    );
    board.head(&head(80, 12, "two"));
    let status = &board.statuses()[1];
    assert_eq!((status.owner.as_str(), status.lag), ("two", 0));
}
