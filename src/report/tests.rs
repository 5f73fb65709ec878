//! Report figures from a stored timeline and snapshots: data-driven examples of what each figure
//! sums, which snapshot the funnel comes from, and that every format renders them.

use chrono::{DateTime, Utc};

use super::*;
use crate::figures::{CampaignCounters, DayCounters};
use crate::report::store::{Stamped, Stored, StoredCampaign};
use crate::snapshot::file::Record;

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
    // Forecast as of the day after the period, at the pace of its last four weeks (2
    // certificates): 96 to go would take years.
    let forecast = figures.forecast.expect("a target, a forecast");
    assert_eq!(
        (forecast.as_of.to_string(), forecast.outlook),
        (
            "2021-01-01".to_owned(),
            crate::forecast::Outlook::NotAtCurrentPace
        )
    );
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
        programme: Some(figures(&stored.campaigns["*"], &period, paris)),
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

/// A snapshot directory holding one snapshot (10 January 2021) of `campaigns` (each like
/// [`campaign`]) and of the programme, whose figures are all large and distinctive
/// ([`PROGRAMME_NUMBERS`]).
fn store_of(campaigns: &[&str]) -> (tempfile::TempDir, Store) {
    let directory = tempfile::tempdir().expect("a temporary dir");
    let taken_at = instant("2021-01-10T12:00:00Z");
    let mut records = Vec::new();
    for id in campaigns {
        records.push(Record::Campaign {
            taken_at,
            counters: counters(id, 9, 5, 30),
        });
        for (_, counts) in campaign().timeline {
            records.push(Record::Day {
                taken_at,
                campaign: (*id).to_owned(),
                counts,
            });
        }
    }
    let mut totals = counters(TOTALS_CAMPAIGN, 400_000, 123_456, 987_654);
    totals.name = "Objectif IA".to_owned();
    totals.clicks = 666_666;
    totals.started = 350_000;
    totals.chapters_completed = vec![171_717, 161_616];
    totals.target = Some(670_000);
    records.push(Record::Totals {
        taken_at,
        counters: totals,
    });
    for (_, counts) in [
        day("2020-10-05", [444_444, 288_889, 250_001, 100_000]),
        day("2020-12-01", [222_222, 111_111, 99_999, 23_456]),
    ] {
        records.push(Record::Day {
            taken_at,
            campaign: TOTALS_CAMPAIGN.to_owned(),
            counts,
        });
    }
    let lines: Vec<String> = records
        .iter()
        .map(|record| serde_json::to_string(record).expect("a record as JSON") + "\n")
        .collect();
    std::fs::write(directory.path().join("2021-01-10.jsonl"), lines.concat())
        .expect("a snapshot file");
    let store = Store::Files(directory.path().to_owned());
    (directory, store)
}

/// The programme's figures in [`store_of`], none of which a campaign's report can hold.
const PROGRAMME_NUMBERS: [u64; 16] = [
    987_654, 400_000, 123_456, 666_666, 350_000, 171_717, 161_616, 670_000, 444_444, 288_889,
    250_001, 100_000, 222_222, 111_111, 99_999, 23_456,
];

/// Every way `text` could show one of the programme's figures.
fn programme_numbers_in(text: &str) -> Vec<String> {
    PROGRAMME_NUMBERS
        .iter()
        .flat_map(|number| {
            [
                number.to_string(),
                Lang::Fr.number(*number),
                Lang::En.number(*number),
            ]
        })
        .filter(|shown| text.contains(shown.as_str()))
        .collect()
}

#[tokio::test]
async fn a_report_made_without_the_programme_shows_no_programme_figure_in_any_format() {
    let (_directory, store) = store_of(&["gendarmerie"]);
    let period = Period::parse("2020-Q4-2").expect("a period");
    let paris = chrono_tz::Europe::Paris;
    let make_one = |programme| {
        make(
            &store,
            Some("gendarmerie"),
            Allowed::All,
            programme,
            &period,
            paris,
        )
    };

    // With the programme, its figures are there (so the checks below can fail).
    let with = make_one(Programme::Included).await.expect("a report");
    let figures = with[0].programme.as_ref().expect("the programme's figures");
    assert_eq!(figures.at_period_end.enrolled, 400_000);
    let html = render(&with, Format::Html, Lang::Fr, true).expect("html");
    assert!(!programme_numbers_in(&html).is_empty());
    assert!(html.contains("class=\"programme\""));
    let json = render(&with, Format::Json, Lang::Fr, true).expect("json");
    assert!(json.contains("\"programme\""), "{json}");

    let reports = make_one(Programme::LeftOut).await.expect("a report");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].programme, None);
    assert_eq!(
        reports[0].figures.at_period_end.enrolled, 8,
        "the campaign's own"
    );
    assert_eq!(reports[0].programme_name, "Objectif IA", "the name stays");

    for lang in [Lang::Fr, Lang::En] {
        let words = lang.words();
        let html = render(&reports, Format::Html, lang, true).expect("html");
        assert_eq!(programme_numbers_in(&html), Vec::<String>::new(), "{html}");
        assert!(!html.contains("class=\"programme\""), "{html}");
        for text in [
            words.programme_in_period,
            words.programme_at_period_end,
            words.funnel_legend_programme,
            words.note_programme,
        ] {
            assert!(!html.contains(&html::escape(text)), "{text:?} in {html}");
        }
        assert!(!html.contains(&lang.label_value(words.programme, "")));
        assert!(!html.contains(&lang.percent(123_456.0 / 400_000.0)));
        assert!(html.contains("Objectif IA") && html.contains(words.enrolled));
        assert_eq!(html.matches("<svg").count(), 2, "both charts");
        assert_eq!(
            html.matches("stroke=\"#111827\" stroke-width=\"3\"")
                .count(),
            0,
            "no programme marker in the funnel"
        );
        // The funnel still has the campaign's bars: enrolled, started, two chapters, certified.
        assert!(html.contains(&lang.percent(5.0 / 9.0)), "{html}");

        let csv = render(&reports, Format::Csv, lang, true).expect("csv");
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(csv::HEADER), "the columns stay");
        let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
        assert!(rows.len() > 10, "{csv}");
        for row in &rows {
            assert_eq!(row.len(), 9, "{row:?}");
            assert_eq!(row[7], "", "no programme_value: {row:?}");
        }
        assert!(
            rows.iter()
                .any(|row| row[4] == "enrolled_at_period_end" && row[6] == "8")
        );
        assert_eq!(programme_numbers_in(&csv), Vec::<String>::new(), "{csv}");
    }

    for one in [true, false] {
        let text = render(&reports, Format::Json, Lang::Fr, one).expect("json");
        assert!(!text.contains("programme\""), "{text}");
        assert_eq!(programme_numbers_in(&text), Vec::<String>::new(), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let report = if one { &json } else { &json["reports"][0] };
        assert_eq!(report["figures"]["at_period_end"]["enrolled"], 8);
        assert!(report.get("programme").is_none(), "{report}");
    }

    // Every campaign, without the programme: none of them carries it.
    let all = make(
        &store,
        None,
        Allowed::All,
        Programme::LeftOut,
        &period,
        paris,
    )
    .await
    .expect("reports");
    assert_eq!(all.len(), 1);
    assert!(all.iter().all(|report| report.programme.is_none()));
}

#[tokio::test]
async fn only_the_allowed_campaigns_are_reported() {
    let (_directory, store) = store_of(&["apec", "gendarmerie", "la-poste"]);
    let period = Period::parse("2020-Q4-2").expect("a period");
    let paris = chrono_tz::Europe::Paris;
    let campaigns = |reports: Vec<Report>| -> Vec<String> {
        reports.into_iter().map(|report| report.campaign).collect()
    };
    let everything = make(
        &store,
        None,
        Allowed::All,
        Programme::Included,
        &period,
        paris,
    )
    .await
    .expect("reports");
    assert_eq!(campaigns(everything), ["apec", "gendarmerie", "la-poste"]);

    let allowed: BTreeSet<String> = ["gendarmerie", "la-poste", "never-seen", TOTALS_CAMPAIGN]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for programme in [Programme::Included, Programme::LeftOut] {
        let reports = make(
            &store,
            None,
            Allowed::Only(&allowed),
            programme,
            &period,
            paris,
        )
        .await
        .expect("reports");
        assert_eq!(
            campaigns(reports),
            ["gendarmerie", "la-poste"],
            "{programme:?}"
        );
    }
    let none = BTreeSet::new();
    let reports = make(
        &store,
        None,
        Allowed::Only(&none),
        Programme::Included,
        &period,
        paris,
    )
    .await
    .expect("no reports");
    assert!(reports.is_empty());

    let one = make(
        &store,
        Some("la-poste"),
        Allowed::Only(&allowed),
        Programme::LeftOut,
        &period,
        paris,
    )
    .await
    .expect("an allowed campaign");
    assert_eq!(campaigns(one), ["la-poste"]);
}

/// The text of the [`ReportError::CampaignNotFound`] that asking `store` for `campaign` gives.
async fn not_found(
    store: &Store,
    campaign: &str,
    allowed: Allowed<'_>,
    programme: Programme,
) -> String {
    let period = Period::parse("2020-Q4-2").expect("a period");
    let paris = chrono_tz::Europe::Paris;
    match make(store, Some(campaign), allowed, programme, &period, paris).await {
        Err(error @ ReportError::CampaignNotFound { .. }) => error.to_string(),
        other => panic!("{campaign}: not found expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_campaign_not_allowed_is_not_found_like_one_never_stored() {
    let (_directory, store) = store_of(&["apec", "gendarmerie"]);
    let allowed: BTreeSet<String> = ["gendarmerie".to_owned()].into_iter().collect();
    let only = Allowed::Only(&allowed);
    let never_stored = not_found(&store, "apec-2", only, Programme::Included).await;
    assert_eq!(
        never_stored,
        "campaign \"apec-2\" is not in the downstream store (files)"
    );
    let stored_but_not_allowed = not_found(&store, "apec", only, Programme::Included).await;
    assert_eq!(
        stored_but_not_allowed,
        never_stored.replace("apec-2", "apec"),
        "the same words"
    );
    assert_eq!(
        not_found(&store, "apec", only, Programme::LeftOut).await,
        stored_but_not_allowed
    );
    // Without the programme, the totals cannot be asked for as a campaign, allowed or not.
    let totals_not_found = never_stored.replace("apec-2", TOTALS_CAMPAIGN);
    assert_eq!(
        not_found(&store, TOTALS_CAMPAIGN, Allowed::All, Programme::LeftOut).await,
        totals_not_found
    );
    let totals: BTreeSet<String> = [TOTALS_CAMPAIGN.to_owned()].into_iter().collect();
    assert_eq!(
        not_found(
            &store,
            TOTALS_CAMPAIGN,
            Allowed::Only(&totals),
            Programme::LeftOut
        )
        .await,
        totals_not_found
    );
    // An empty store says so whether the campaign is allowed or not.
    let empty = tempfile::tempdir().expect("a temporary dir");
    let empty = Store::Files(empty.path().to_owned());
    let period = Period::parse("2020-Q4-2").expect("a period");
    for campaign in ["gendarmerie", "apec"] {
        let result = make(
            &empty,
            Some(campaign),
            only,
            Programme::LeftOut,
            &period,
            chrono_tz::Europe::Paris,
        )
        .await;
        assert!(
            matches!(result, Err(ReportError::Empty("files"))),
            "{result:?}"
        );
    }
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
