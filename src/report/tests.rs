//! Report figures from a stored timeline and snapshots: data-driven examples of what each figure
//! sums, which snapshot the funnel comes from, and that every format renders them.

use chrono::{DateTime, Utc};

use super::*;
use crate::figures::{CampaignCounters, DayCounters};
use crate::report::store::{Stamped, Stored, StoredCampaign};

fn instant(text: &str) -> DateTime<Utc> {
    text.parse().expect("an RFC 3339 instant")
}

fn day(text: &str, [clicks, enrolled, started, certified]: [u64; 4]) -> (Day, DayCounters) {
    let day: Day = text.parse().expect("a day");
    (
        day,
        DayCounters {
            day,
            clicks,
            enrolled,
            started,
            certified,
        },
    )
}

fn counters(campaign: &str, enrolled: u64, certified: u64, visitors: u64) -> CampaignCounters {
    CampaignCounters {
        campaign: campaign.to_owned(),
        name: "Gendarmerie nationale".to_owned(),
        clicks: enrolled * 2,
        unique_visitors: visitors,
        enrolled,
        started: enrolled,
        chapters_completed: vec![certified + 1, certified],
        certified,
        completion_rate: 0.0,
        target: Some(100),
        progress: None,
        as_of: instant("2021-01-01T00:00:00Z"),
        registered: true,
    }
}

/// Days in 2020-Q4-1 (1 Oct – 15 Nov), 2020-Q4-2 (16 Nov – 31 Dec) and 2021-Q1-1, and
/// snapshots taken on 10 Nov, 20 Dec and 10 Jan.
fn campaign() -> StoredCampaign {
    StoredCampaign {
        latest: Some(Stamped {
            taken_at: instant("2021-01-10T12:00:00Z"),
            counters: counters("gendarmerie", 9, 5, 30),
        }),
        as_of_end: None,
        timeline: [
            day("2020-10-05", [4, 3, 3, 0]),
            day("2020-11-15", [1, 1, 1, 1]),
            day("2020-11-16", [2, 2, 2, 1]),
            day("2020-12-31", [5, 2, 2, 2]),
            day("2021-01-02", [1, 1, 1, 1]),
        ]
        .into_iter()
        .collect(),
    }
}

fn flow([clicks, enrolled, started, certified]: [u64; 4]) -> Flow {
    Flow {
        clicks,
        enrolled,
        started,
        certified,
    }
}

#[test]
fn period_figures_sum_the_days_of_the_period_and_before() {
    let paris = chrono_tz::Europe::Paris;
    let period = Period::parse("2020-Q4-2").expect("a period");
    let figures = figures(&campaign(), &period, paris);
    assert_eq!(figures.in_period, flow([7, 4, 4, 3]));
    assert_eq!(figures.in_previous_period, flow([5, 4, 4, 1]));
    assert_eq!(
        figures.change,
        Change {
            clicks: 2,
            enrolled: 0,
            started: 0,
            certified: 2
        }
    );
    assert_eq!(figures.at_period_end, flow([12, 8, 8, 4]));
    assert_eq!(figures.at_previous_period_end, flow([5, 4, 4, 1]));
    assert_eq!(figures.completion_rate, Some(0.5));
    assert_eq!((figures.target, figures.progress), (Some(100), Some(0.04)));
    let running: Vec<(String, u64, u64)> = figures
        .cumulative
        .iter()
        .map(|day| (day.day.to_string(), day.enrolled, day.certified))
        .collect();
    assert_eq!(
        running,
        [
            ("2020-10-05".to_owned(), 3, 0),
            ("2020-11-15".to_owned(), 4, 1),
            ("2020-11-16".to_owned(), 6, 2),
            ("2020-12-31".to_owned(), 8, 4),
        ]
    );

    let range = Period::range(
        "2020-10-05".parse().expect("a date"),
        "2020-11-15".parse().expect("a date"),
    )
    .expect("a range");
    let figures = super::figures(&campaign(), &range, paris);
    assert_eq!(figures.in_period, flow([5, 4, 4, 1]));
    assert_eq!(figures.in_previous_period, Flow::default());
}

#[test]
fn the_funnel_comes_from_the_last_snapshot_before_the_end_or_else_says_it_is_later() {
    let paris = chrono_tz::Europe::Paris;
    let period = Period::parse("2020-Q4-2").expect("a period");
    let later = figures(&campaign(), &period, paris)
        .funnel
        .expect("the latest snapshot");
    assert!(later.after_period_end);
    assert_eq!(later.as_of, instant("2021-01-10T12:00:00Z"));
    assert_eq!((later.unique_visitors, later.certified), (30, 5));

    let mut stored = campaign();
    stored.as_of_end = Some(Stamped {
        taken_at: instant("2020-12-20T12:00:00Z"),
        counters: counters("gendarmerie", 6, 2, 20),
    });
    let before = figures(&stored, &period, paris)
        .funnel
        .expect("the snapshot before");
    assert!(!before.after_period_end);
    assert_eq!(
        (before.unique_visitors, before.chapters_completed),
        (20, vec![3, 2])
    );
}

#[test]
fn every_format_renders_the_figures() {
    let paris = chrono_tz::Europe::Paris;
    let period = Period::parse("2020-Q4-2").expect("a period");
    let mut programme = campaign();
    programme.latest = programme.latest.map(|mut stamped| {
        stamped.counters.campaign = "*".to_owned();
        stamped.counters.name = "Objectif IA".to_owned();
        stamped
    });
    let stored = Stored {
        latest_snapshot: Some(instant("2021-01-10T12:00:00Z")),
        campaigns: [
            ("gendarmerie".to_owned(), campaign()),
            ("*".to_owned(), programme),
        ]
        .into_iter()
        .collect(),
    };
    let report = Report {
        campaign: "gendarmerie".to_owned(),
        name: "Gendarmerie <nationale>".to_owned(),
        registered: true,
        programme_name: "Objectif IA".to_owned(),
        period: period.clone(),
        previous_period: period.previous(),
        time_zone: "Europe/Paris".to_owned(),
        source: "files",
        latest_snapshot: stored.latest_snapshot,
        generated_at: instant("2021-01-11T08:00:00Z"),
        figures: figures(&stored.campaigns["gendarmerie"], &period, paris),
        programme: figures(&stored.campaigns["*"], &period, paris),
    };
    let reports = [report];

    let html = render(&reports, Format::Html, Lang::Fr, true).expect("html");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<html lang=\"fr\">"));
    assert!(html.contains("Gendarmerie &lt;nationale&gt;"));
    assert!(!html.contains("<nationale>"));
    assert_eq!(html.matches("<svg").count(), 2, "two charts");
    assert!(html.contains("T4 2020, 2e moitié"));
    assert!(html.contains("Inscrits"));
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "nothing fetched"
    );
    let english = render(&reports, Format::Html, Lang::En, true).expect("html");
    assert!(english.contains("<html lang=\"en\">") && english.contains("Enrolled"));

    let csv = render(&reports, Format::Csv, Lang::Fr, true).expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], csv::HEADER);
    let row = |metric: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|line| line.split(',').nth(4) == Some(metric))
            .unwrap_or_else(|| panic!("a row for {metric} in {csv}"));
        line.split(',').map(str::to_owned).collect()
    };
    assert_eq!(
        row("enrolled_in_period")[..8],
        [
            "gendarmerie",
            "2020-Q4-2",
            "2020-11-16",
            "2020-12-31",
            "enrolled_in_period",
            "Inscrits (période)",
            "4",
            "4"
        ]
    );
    assert_eq!(row("certified_change")[6], "2");
    assert_eq!(row("completion_rate_at_period_end")[6], "0.5");
    assert_eq!(row("unique_visitors")[6], "30");
    assert_eq!(row("unique_visitors")[8], "2021-01-10T12:00:00Z");
    assert_eq!(row("chapter_02_completed")[6], "5");

    let json: serde_json::Value =
        serde_json::from_str(&render(&reports, Format::Json, Lang::Fr, true).expect("json"))
            .expect("valid JSON");
    assert_eq!(json["figures"]["in_period"]["enrolled"], 4);
    assert_eq!(json["figures"]["at_period_end"]["certified"], 4);
    assert_eq!(json["period"]["name"], "2020-Q4-2");
    assert_eq!(json["period"]["from"], "2020-11-16");
    assert_eq!(json["figures"]["funnel"]["after_period_end"], true);
    let all: serde_json::Value =
        serde_json::from_str(&render(&reports, Format::Json, Lang::Fr, false).expect("json"))
            .expect("valid JSON");
    assert_eq!(all["reports"][0]["campaign"], "gendarmerie");
}

#[test]
fn file_names_stay_in_their_folder() {
    assert_eq!(file_name("gendarmerie"), "gendarmerie");
    assert_eq!(file_name("la-poste_2.0"), "la-poste_2.0");
    assert_eq!(file_name("../etc/passwd"), "%2E.%2Fetc%2Fpasswd");
    assert_eq!(file_name("a b/c"), "a%20b%2Fc");
    assert_eq!(file_name(".hidden"), "%2Ehidden");
    assert_eq!(file_name("_all"), "%5Fall");
    assert_eq!(file_name("évian"), "%C3%A9vian");
    assert_eq!(file_name("evil\u{0}x"), "evil%00x");
}

#[test]
fn every_campaign_gets_a_file_name_of_its_own() {
    let campaigns = [
        "a/b",
        "a?b",
        "a_b",
        "a%2Fb",
        "a%2fb",
        "A_b",
        "all",
        "_all",
        "a.b",
        "a b",
        "a\\b",
        "a:b",
        "a*b",
        "a|b",
        "gendarmerie",
    ];
    let long_a = "a".repeat(300);
    let long_b = format!("{}b", "a".repeat(299));
    let mut names: Vec<String> = campaigns
        .iter()
        .map(|campaign| file_name(campaign))
        .collect();
    names.push(file_name(&long_a));
    names.push(file_name(&long_b));
    names.push(super::ALL_CAMPAIGNS_FILE_NAME.to_owned());
    let distinct: std::collections::HashSet<String> =
        names.iter().map(|name| name.to_lowercase()).collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
    for name in &names {
        assert!(name.len() <= 200, "{name}");
        assert!(!name.starts_with('.') && !name.contains('/'), "{name}");
    }
}
