//! Reports as CSV (RFC 4180, UTF-8, comma-separated, `\r\n` line ends): one row per figure of
//! each report, so one file holds one campaign or all of them and opens as a table in any
//! spreadsheet. Columns: `campaign, period, from, to, metric, label, value, programme_value,
//! as_of`. `metric` is a stable machine name (`enrolled_in_period`, `chapter_03_completed`, …),
//! `label` the same in the report's language; values are plain numbers (rates as fractions, a
//! point for decimals), empty where a figure cannot be given; `as_of` is the snapshot a figure
//! comes from when it is not dated by day (unique visitors, chapters). A report made without
//! the programme's figures keeps every column, `programme_value` empty on every row.
//!
//! Campaign ids come from senders, and the file is opened in a spreadsheet: a cell that starts
//! like a formula (`=`, `+`, `-`, `@`, a tab or a carriage return, or their full-width forms)
//! and is not a plain number gets a leading `'`, as OWASP recommends against CSV injection, so
//! the spreadsheet shows it as text and never evaluates it.

use std::fmt::Write;

use crate::forecast::{Forecast, Outlook};
use crate::report::lang::Lang;
use crate::report::{Flow, Funnel, Report, ReportFigures};

/// One field of a forecast, as a CSV value.
type ForecastField = fn(&Forecast) -> String;

/// The header row.
pub const HEADER: &str = "campaign,period,from,to,metric,label,value,programme_value,as_of";

/// Every row of every report, after the header.
pub fn render(reports: &[Report], lang: Lang) -> String {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push_str("\r\n");
    for report in reports {
        let period = report
            .period
            .name
            .clone()
            .unwrap_or_else(|| format!("{}..{}", report.period.from, report.period.to));
        for row in rows(report, lang) {
            let fields = [
                report.campaign.clone(),
                period.clone(),
                report.period.from.to_string(),
                report.period.to.to_string(),
                row.metric,
                row.label,
                row.value,
                row.programme_value,
                row.as_of,
            ];
            let line: Vec<String> = fields.iter().map(|field| quote(field)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
    }
    out
}

struct Row {
    metric: String,
    label: String,
    value: String,
    programme_value: String,
    as_of: String,
}

fn rows(report: &Report, lang: Lang) -> Vec<Row> {
    let words = lang.words();
    let (campaign, programme) = (&report.figures, report.programme.as_ref());
    let mut rows = Vec::new();
    let mut row = |metric: String, label: String, value: String, programme_value: String| {
        rows.push(Row {
            metric,
            label,
            value,
            programme_value,
            as_of: String::new(),
        });
    };
    let flows: [(&str, &str, FlowCount); 4] = [
        ("clicks", words.clicks, |flow| flow.clicks),
        ("enrolled", words.enrolled, |flow| flow.enrolled),
        ("started", words.started, |flow| flow.started),
        ("certified", words.certified, |flow| flow.certified),
    ];
    for (metric, label, get) in flows {
        let pick = |figures: &ReportFigures, which: Which| -> String {
            match which {
                Which::InPeriod => get(&figures.in_period).to_string(),
                Which::InPrevious => get(&figures.in_previous_period).to_string(),
                Which::Change => (i128::from(get(&figures.in_period))
                    - i128::from(get(&figures.in_previous_period)))
                .to_string(),
                Which::AtEnd => get(&figures.at_period_end).to_string(),
            }
        };
        for (suffix, qualifier, which) in [
            ("in_period", words.period, Which::InPeriod),
            (
                "in_previous_period",
                words.previous_period,
                Which::InPrevious,
            ),
            ("change", words.change, Which::Change),
            ("at_period_end", words.at_period_end, Which::AtEnd),
        ] {
            row(
                format!("{metric}_{suffix}"),
                format!("{label} ({})", qualifier.to_lowercase()),
                pick(campaign, which),
                programme
                    .map(|programme| pick(programme, which))
                    .unwrap_or_default(),
            );
        }
    }
    let optional = |value: Option<f64>| value.map(rate).unwrap_or_default();
    row(
        "completion_rate_at_period_end".to_owned(),
        words.completion_rate.to_owned(),
        optional(campaign.completion_rate),
        optional(programme.and_then(|programme| programme.completion_rate)),
    );
    row(
        "target".to_owned(),
        words.target.to_owned(),
        campaign.target.map(|t| t.to_string()).unwrap_or_default(),
        programme
            .and_then(|programme| programme.target)
            .map(|t| t.to_string())
            .unwrap_or_default(),
    );
    row(
        "progress_at_period_end".to_owned(),
        words.progress.to_owned(),
        optional(campaign.progress),
        optional(programme.and_then(|programme| programme.progress)),
    );
    // The forecast at the period's end: its status, dates and pace, machine-readable.
    let forecast_of = |figures: &ReportFigures, get: ForecastField| {
        figures.forecast.as_ref().map(get).unwrap_or_default()
    };
    let forecast_fields: [(&str, ForecastField); 5] = [
        ("forecast_status", |forecast| {
            match forecast.outlook {
                Outlook::Reached { .. } => "reached",
                Outlook::Expected { .. } => "expected",
                Outlook::NotAtCurrentPace => "not_at_current_pace",
            }
            .to_owned()
        }),
        ("forecast_date", |forecast| match forecast.outlook {
            Outlook::Reached { on } => on.to_string(),
            Outlook::Expected { date, .. } => date.to_string(),
            Outlook::NotAtCurrentPace => String::new(),
        }),
        ("forecast_earliest", |forecast| match forecast.outlook {
            Outlook::Expected { earliest, .. } => earliest.to_string(),
            _ => String::new(),
        }),
        ("forecast_latest", |forecast| match forecast.outlook {
            Outlook::Expected {
                latest: Some(latest),
                ..
            } => latest.to_string(),
            _ => String::new(),
        }),
        ("forecast_pace_per_week", |forecast| {
            format!("{:.1}", forecast.pace_per_week)
        }),
    ];
    for (metric, get) in forecast_fields {
        row(
            metric.to_owned(),
            words.forecast_at_period_end.to_owned(),
            forecast_of(campaign, get),
            programme
                .map(|programme| forecast_of(programme, get))
                .unwrap_or_default(),
        );
    }
    let as_of = |funnel: &Option<Funnel>| {
        funnel
            .as_ref()
            .map(|funnel| {
                funnel
                    .as_of
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_default()
    };
    let from_funnel = |funnel: Option<&Funnel>, get: &dyn Fn(&Funnel) -> Option<u64>| {
        funnel
            .and_then(get)
            .map(|value| value.to_string())
            .unwrap_or_default()
    };
    let snapshot_as_of = as_of(&campaign.funnel);
    let programme_funnel = programme.and_then(|programme| programme.funnel.as_ref());
    rows.push(Row {
        metric: "unique_visitors".to_owned(),
        label: words.unique_visitors.to_owned(),
        value: from_funnel(campaign.funnel.as_ref(), &|f| Some(f.unique_visitors)),
        programme_value: from_funnel(programme_funnel, &|f| Some(f.unique_visitors)),
        as_of: snapshot_as_of.clone(),
    });
    let chapters = campaign
        .funnel
        .as_ref()
        .map_or(0, |funnel| funnel.chapters_completed.len());
    for chapter in 0..chapters {
        rows.push(Row {
            metric: format!("chapter_{:02}_completed", chapter + 1),
            label: format!("{} {}", words.chapter, chapter + 1),
            value: from_funnel(campaign.funnel.as_ref(), &|f| {
                f.chapters_completed.get(chapter).copied()
            }),
            programme_value: from_funnel(programme_funnel, &|f| {
                f.chapters_completed.get(chapter).copied()
            }),
            as_of: snapshot_as_of.clone(),
        });
    }
    rows
}

/// One count of a [`Flow`].
type FlowCount = fn(&Flow) -> u64;

#[derive(Clone, Copy)]
enum Which {
    InPeriod,
    InPrevious,
    Change,
    AtEnd,
}

/// A rate as a plain decimal fraction, six places at most.
fn rate(value: f64) -> String {
    let mut text = String::new();
    let _ = write!(text, "{value:.6}");
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_owned()
}

/// A field as a cell: neutralised when a spreadsheet would read it as a formula, and quoted when
/// it holds a comma, a quote or a line break (RFC 4180).
fn quote(field: &str) -> String {
    let field = neutralise(field);
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.into_owned()
    }
}

/// `field` with a leading `'` when it starts with a character that makes a spreadsheet read a
/// formula, unless it is a plain number (a negative change is a figure, not a formula).
fn neutralise(field: &str) -> std::borrow::Cow<'_, str> {
    const FORMULA_STARTS: [char; 10] = [
        '=', '+', '-', '@', '\t', '\r', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
    ];
    if field.starts_with(FORMULA_STARTS) && !is_plain_number(field) {
        std::borrow::Cow::Owned(format!("'{field}"))
    } else {
        std::borrow::Cow::Borrowed(field)
    }
}

/// `-12`, `3`, `0.5`: digits, with a leading minus and one decimal point at most.
fn is_plain_number(field: &str) -> bool {
    let digits = field.strip_prefix('-').unwrap_or(field);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|byte| byte.is_ascii_digit())
        && fraction.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_rates() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a, b"), "\"a, b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(rate(0.861_538_461), "0.861538");
        assert_eq!(rate(0.5), "0.5");
        assert_eq!(rate(1.0), "1");
        assert_eq!(rate(0.0), "0");
    }

    #[test]
    fn cells_that_start_like_a_formula_are_neutralised() {
        for (field, cell) in [
            (
                "=hyperlink(\"http://x\",\"y\")",
                "\"'=hyperlink(\"\"http://x\"\",\"\"y\"\")\"",
            ),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@sum(1+1)", "'@sum(1+1)"),
            ("\t=1+1", "'\t=1+1"),
            ("\r=1+1", "\"'\r=1+1\""),
            ("\u{ff1d}1+1", "'\u{ff1d}1+1"),
            ("-", "'-"),
            ("-1.", "'-1."),
            ("gendarmerie", "gendarmerie"),
            ("a=b", "a=b"),
            ("-3", "-3"),
            ("-0.25", "-0.25"),
            ("12", "12"),
            ("", ""),
        ] {
            assert_eq!(quote(field), cell, "{field:?}");
        }
    }
}
