//! Reports as one self-contained HTML page: no script, no outside font, image or style sheet;
//! the charts are inline SVG drawn here (cumulative enrolments and certificates over time, with
//! the period shaded; the chapter funnel, with the programme's shares beside the campaign's).
//! The page is laid out for A4 and prints to PDF as it shows: each report starts a new page,
//! sections do not break across pages, colours are kept. Every text comes from [`Lang`]; every
//! text from the data (names, ids) is escaped.

use std::fmt::Write;

use chrono::{Datelike, Days, NaiveDate};
use chrono_tz::Tz;

use crate::report::lang::{Lang, Words};
use crate::report::{CumulativeDay, Flow, Funnel, Report, ReportFigures};

/// One count of a [`Flow`].
type FlowCount = fn(&Flow) -> u64;
/// One running total of a [`CumulativeDay`].
type DayCount = fn(&CumulativeDay) -> u64;

const ENROLLED_COLOUR: &str = "#1d4ed8";
const CERTIFIED_COLOUR: &str = "#047857";
const STARTED_COLOUR: &str = "#6d28d9";
const CHAPTER_COLOUR: &str = "#0e7490";
const PERIOD_COLOUR: &str = "#fde68a";

const STYLE: &str = r#"
@page { size: A4; margin: 14mm 14mm 16mm; }
* { box-sizing: border-box; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
html { background: #f3f4f6; }
body { margin: 0; color: #111827; font: 14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
.report { max-width: 820px; margin: 24px auto; padding: 28px 32px; background: #fff; }
.report + .report { break-before: page; }
header { border-bottom: 3px solid #1d4ed8; padding-bottom: 10px; margin-bottom: 16px; }
.kicker { margin: 0; color: #1d4ed8; font-weight: bold; letter-spacing: .04em; text-transform: uppercase; font-size: 12px; }
h1 { margin: 4px 0 2px; font-size: 26px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
.period { margin: 0; font-size: 16px; }
.meta { margin: 6px 0 0; color: #4b5563; font-size: 12px; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; }
.card { border: 1px solid #e5e7eb; border-radius: 6px; padding: 10px 12px; break-inside: avoid; }
.card .label { color: #4b5563; font-size: 12px; }
.card .value { font-size: 24px; font-weight: bold; margin: 2px 0; }
.card .detail { color: #4b5563; font-size: 11.5px; }
table { width: 100%; border-collapse: collapse; font-size: 12.5px; }
th, td { padding: 5px 6px; border-bottom: 1px solid #e5e7eb; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { color: #374151; font-weight: bold; border-bottom: 2px solid #9ca3af; vertical-align: bottom; }
td.programme, th.programme { background: #f9fafb; color: #374151; }
.up { color: #047857; } .down { color: #b91c1c; }
section { break-inside: avoid; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
.notes { color: #374151; font-size: 11.5px; }
.caption { margin: -4px 0 6px; color: #4b5563; font-size: 12px; }
.notes ul { padding-left: 18px; margin: 4px 0; }
@media print { html { background: #fff; } .report { margin: 0; padding: 0; max-width: none; } }
"#;

/// The page holding every report, one after the other.
pub fn render(reports: &[Report], lang: Lang) -> String {
    let words = lang.words();
    let title = match reports {
        [report] => format!(
            "{} — {} — {} — {}",
            programme_name(report),
            words.report,
            display_name(report),
            lang.period(&report.period)
        ),
        _ => format!("{} — {}", words.report, reports.len()),
    };
    let mut page = String::new();
    let _ = writeln!(
        page,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        words.lang_code,
        escape(&title)
    );
    for report in reports {
        report_html(&mut page, report, lang);
    }
    page.push_str("</body>\n</html>\n");
    page
}

fn report_html(page: &mut String, report: &Report, lang: Lang) {
    let words = lang.words();
    let time_zone: Tz = report.time_zone.parse().unwrap_or(chrono_tz::Europe::Paris);
    let figures = &report.figures;
    let _ = writeln!(
        page,
        "<article class=\"report\">\n<header>\n<p class=\"kicker\">{} · {}</p>\n\
         <h1>{}</h1>\n<p class=\"period\">{}</p>\n<p class=\"meta\">{} · {}{}</p>\n</header>",
        escape(&programme_name(report)),
        words.report,
        escape(&display_name(report)),
        escape(&lang.period(&report.period)),
        escape(&report.campaign),
        match report.source {
            "postgres" => words.source_postgres,
            _ => words.source_files,
        },
        report
            .latest_snapshot
            .map(|at| format!(
                ", {} {} · {} {}",
                words.latest_snapshot,
                escape(&lang.instant(at, time_zone)),
                words.generated,
                escape(&lang.instant(report.generated_at, time_zone))
            ))
            .unwrap_or_default()
    );

    // The four figures a partner looks for first.
    page.push_str("<section class=\"cards\">\n");
    card(
        page,
        words.enrolled,
        &lang.number(figures.at_period_end.enrolled),
        &in_period_detail(
            lang,
            figures.in_period.enrolled,
            figures.in_previous_period.enrolled,
        ),
    );
    card(
        page,
        words.certified,
        &lang.number(figures.at_period_end.certified),
        &in_period_detail(
            lang,
            figures.in_period.certified,
            figures.in_previous_period.certified,
        ),
    );
    card(
        page,
        words.completion_rate,
        &figures
            .completion_rate
            .map_or_else(|| words.not_available.to_owned(), |rate| lang.percent(rate)),
        &report
            .programme
            .completion_rate
            .map_or_else(String::new, |rate| {
                lang.label_value(words.programme, &lang.percent(rate))
            }),
    );
    match (figures.progress, figures.target) {
        (Some(progress), Some(target)) => card(
            page,
            words.progress,
            &lang.percent(progress),
            &lang.label_value(words.target, &lang.number(target)),
        ),
        _ => card(page, words.progress, words.not_available, words.no_target),
    }
    page.push_str("</section>\n");

    figures_table(page, report, lang);

    let _ = writeln!(
        page,
        "<section class=\"chart\">\n<h2>{}</h2>\n{}</section>",
        words.cumulative_chart,
        cumulative_chart(report, lang)
    );
    // The funnel is not dated by day: say which snapshot it is.
    let as_of = report
        .figures
        .funnel
        .as_ref()
        .map(|funnel| {
            let at = lang.instant(funnel.as_of, time_zone);
            let text = if funnel.after_period_end {
                words.funnel_as_of_after.replace("{at}", &at)
            } else {
                words.funnel_as_of.replace("{at}", &at)
            };
            format!("<p class=\"caption\">{}</p>\n", escape(&text))
        })
        .unwrap_or_default();
    let _ = writeln!(
        page,
        "<section class=\"chart\">\n<h2>{}</h2>\n{as_of}{}</section>",
        words.funnel_chart,
        funnel_chart(&report.figures, &report.programme, lang)
    );
    notes(page, report, lang, time_zone);
    page.push_str("</article>\n");
}

fn card(page: &mut String, label: &str, value: &str, detail: &str) {
    let _ = writeln!(
        page,
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div>\
         <div class=\"detail\">{}</div></div>",
        escape(label),
        escape(value),
        escape(detail)
    );
}

/// `+12 000 pendant la période (+8,1 % par rapport à la précédente)`.
fn in_period_detail(lang: Lang, in_period: u64, in_previous: u64) -> String {
    let signed = lang.signed(i64::try_from(in_period).unwrap_or(i64::MAX));
    let relative = relative_change(in_period, in_previous)
        .map(|change| {
            let text = signed_percent(lang, change);
            match lang {
                Lang::Fr => format!(" ({text} par rapport à la précédente)"),
                Lang::En => format!(" ({text} on the previous one)"),
            }
        })
        .unwrap_or_default();
    match lang {
        Lang::Fr => format!("{signed} pendant la période{relative}"),
        Lang::En => format!("{signed} during the period{relative}"),
    }
}

#[allow(clippy::cast_precision_loss)] // Counts stay far below 2^52.
fn relative_change(now: u64, before: u64) -> Option<f64> {
    (before > 0).then(|| (now as f64 - before as f64) / before as f64)
}

fn signed_percent(lang: Lang, change: f64) -> String {
    let text = lang.percent(change.abs());
    if change > 0.0005 {
        format!("+{text}")
    } else if change < -0.0005 {
        format!("\u{2212}{text}")
    } else {
        text
    }
}

fn figures_table(page: &mut String, report: &Report, lang: Lang) {
    let words = lang.words();
    let (campaign, programme) = (&report.figures, &report.programme);
    let _ = writeln!(
        page,
        "<section>\n<h2>{}</h2>\n<table>\n<thead><tr><th></th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th><th class=\"programme\">{}</th><th class=\"programme\">{}</th></tr></thead>\n<tbody>",
        words.figures,
        words.period,
        words.previous_period,
        words.change,
        words.at_period_end,
        words.programme_in_period,
        words.programme_at_period_end
    );
    let flows: [(&str, FlowCount); 4] = [
        (words.clicks, |flow| flow.clicks),
        (words.enrolled, |flow| flow.enrolled),
        (words.started, |flow| flow.started),
        (words.certified, |flow| flow.certified),
    ];
    for (label, get) in flows {
        let now = get(&campaign.in_period);
        let before = get(&campaign.in_previous_period);
        let change =
            i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
        let class = match change {
            0 => "",
            c if c > 0 => " class=\"up\"",
            _ => " class=\"down\"",
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td{class}>{}</td><td>{}</td>\
             <td class=\"programme\">{}</td><td class=\"programme\">{}</td></tr>",
            escape(label),
            lang.number(now),
            lang.number(before),
            lang.signed(change),
            lang.number(get(&campaign.at_period_end)),
            lang.number(get(&programme.in_period)),
            lang.number(get(&programme.at_period_end)),
        );
    }
    let missing = words.not_available;
    let visitors = |funnel: &Option<Funnel>| {
        funnel.as_ref().map_or_else(
            || missing.to_owned(),
            |f| format!("{}*", lang.number(f.unique_visitors)),
        )
    };
    let _ = writeln!(
        page,
        "<tr><td>{}</td><td>{missing}</td><td>{missing}</td><td>{missing}</td><td>{}</td>\
         <td class=\"programme\">{missing}</td><td class=\"programme\">{}</td></tr>",
        escape(words.unique_visitors),
        visitors(&campaign.funnel),
        visitors(&programme.funnel),
    );
    let rate = |rate: Option<f64>| rate.map_or_else(|| missing.to_owned(), |r| lang.percent(r));
    for (label, value, programme_value) in [
        (
            words.completion_rate,
            campaign.completion_rate,
            programme.completion_rate,
        ),
        (words.progress, campaign.progress, programme.progress),
    ] {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{missing}</td><td>{missing}</td><td>{missing}</td><td>{}</td>\
             <td class=\"programme\">{missing}</td><td class=\"programme\">{}</td></tr>",
            escape(label),
            rate(value),
            rate(programme_value),
        );
    }
    let target =
        |target: Option<u64>| target.map_or_else(|| missing.to_owned(), |t| lang.number(t));
    let _ = writeln!(
        page,
        "<tr><td>{}</td><td></td><td></td><td></td><td>{}</td><td class=\"programme\"></td>\
         <td class=\"programme\">{}</td></tr>\n</tbody>\n</table>\n</section>",
        escape(words.target),
        target(campaign.target),
        target(programme.target),
    );
}

fn notes(page: &mut String, report: &Report, lang: Lang, time_zone: Tz) {
    let words = lang.words();
    let mut items = vec![words.note_dating.replace("{tz}", &report.time_zone)];
    items.push(match &report.figures.funnel {
        Some(funnel) => {
            let template = if funnel.after_period_end {
                words.note_snapshot_after
            } else {
                words.note_snapshot_before
            };
            format!(
                "* {}",
                template.replace("{at}", &lang.instant(funnel.as_of, time_zone))
            )
        }
        None => words.note_no_snapshot.to_owned(),
    });
    items.push(words.note_visitors.to_owned());
    items.push(words.note_programme.to_owned());
    let _ = writeln!(
        page,
        "<section class=\"notes\">\n<h2>{}</h2>\n<ul>",
        words.notes
    );
    for item in items {
        let _ = writeln!(page, "<li>{}</li>", escape(&item));
    }
    page.push_str("</ul>\n</section>\n");
}

// The charts. Coordinates are in the SVG's own units; the SVG scales to the page's width.

const CHART_WIDTH: f64 = 760.0;
const CHART_HEIGHT: f64 = 290.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 92.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 34.0;

/// Cumulative enrolled and certified from the first day with data to the end of the period,
/// the period shaded.
fn cumulative_chart(report: &Report, lang: Lang) -> String {
    let words = lang.words();
    let series = &report.figures.cumulative;
    let period = &report.period;
    let first = series
        .first()
        .map_or(period.from, |day| day.day.date())
        .min(period.from);
    let last = period.to + Days::new(1);
    let span = (last - first).num_days().max(1) as f64;
    let plot_width = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_height = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x = |date: NaiveDate| MARGIN_LEFT + (date - first).num_days() as f64 / span * plot_width;
    let top = series
        .last()
        .map_or(0, |day| day.enrolled.max(day.certified));
    let y_max = nice_ceiling(top);
    let y = |value: u64| MARGIN_TOP + plot_height - value as f64 / y_max as f64 * plot_height;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" \
         role=\"img\" aria-label=\"{}\">",
        escape(words.cumulative_chart)
    );
    // The period.
    let _ = writeln!(
        svg,
        "<rect x=\"{:.1}\" y=\"{MARGIN_TOP}\" width=\"{:.1}\" height=\"{plot_height}\" fill=\"{PERIOD_COLOUR}\" opacity=\"0.55\"/>",
        x(period.from),
        (x(last) - x(period.from)).max(1.0)
    );
    // Horizontal grid and the counts.
    for step in 0..=4u64 {
        let value = y_max * step / 4;
        let at = y(value);
        let _ = writeln!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" x2=\"{:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#e5e7eb\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#4b5563\">{}</text>",
            MARGIN_LEFT + plot_width,
            MARGIN_LEFT - 6.0,
            at + 4.0,
            escape(&lang.number(value))
        );
    }
    // Months along the bottom.
    let months = month_starts(first, last);
    let every = months.len().div_ceil(8).max(1);
    for month in months.iter().step_by(every) {
        let at = x(*month);
        let _ = writeln!(
            svg,
            "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#9ca3af\"/>\
             <text x=\"{at:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#4b5563\">{}</text>",
            MARGIN_TOP + plot_height,
            MARGIN_TOP + plot_height + 5.0,
            MARGIN_TOP + plot_height + 18.0,
            escape(&lang.short_month(*month))
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{MARGIN_LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#6b7280\"/>",
        MARGIN_LEFT + plot_width,
        MARGIN_TOP + plot_height,
        MARGIN_TOP + plot_height
    );
    if series.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"14\" text-anchor=\"middle\" fill=\"#6b7280\">{}</text>",
            MARGIN_LEFT + plot_width / 2.0,
            MARGIN_TOP + plot_height / 2.0,
            escape(words.no_data)
        );
    }
    let lines: [(&str, DayCount); 2] = [
        (ENROLLED_COLOUR, |day| day.enrolled),
        (CERTIFIED_COLOUR, |day| day.certified),
    ];
    for (colour, get) in lines {
        if series.is_empty() {
            continue;
        }
        // Each day's running total is reached at the end of that day; across days with nothing
        // new the line stays flat.
        let mut points = format!("{:.1},{:.1}", x(first), y(0));
        let mut previous = (first, 0);
        for day in series {
            let date = day.day.date();
            if date > previous.0 {
                let _ = write!(points, " {:.1},{:.1}", x(date), y(previous.1));
            }
            let end = date + Days::new(1);
            let _ = write!(points, " {:.1},{:.1}", x(end), y(get(day)));
            previous = (end, get(day));
        }
        let previous = previous.1;
        let _ = write!(points, " {:.1},{:.1}", x(last), y(previous));
        let _ = writeln!(
            svg,
            "<polyline points=\"{points}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" stroke-linejoin=\"round\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" font-weight=\"bold\" fill=\"{colour}\">{}</text>",
            x(last) + 6.0,
            y(previous) + 4.0,
            escape(&lang.number(previous))
        );
    }
    // The legend.
    let legend: [(&str, &str); 3] = [
        (ENROLLED_COLOUR, words.enrolled),
        (CERTIFIED_COLOUR, words.certified),
        (PERIOD_COLOUR, words.period),
    ];
    let mut at = MARGIN_LEFT;
    for (colour, label) in legend {
        let _ = writeln!(
            svg,
            "<rect x=\"{at:.1}\" y=\"8\" width=\"14\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"17\" font-size=\"12\" fill=\"#111827\">{}</text>",
            at + 19.0,
            escape(label)
        );
        at += 30.0 + 7.2 * label.chars().count() as f64;
    }
    svg.push_str("</svg>\n");
    svg
}

const FUNNEL_ROW: f64 = 21.0;
const FUNNEL_LABEL: f64 = 170.0;
const FUNNEL_BARS: f64 = 430.0;

/// One bar per stage (enrolled, started, each chapter, certified), as a share of the enrolled,
/// with the programme's share of the same stage marked.
fn funnel_chart(campaign: &ReportFigures, programme: &ReportFigures, lang: Lang) -> String {
    let words = lang.words();
    let Some(funnel) = campaign
        .funnel
        .as_ref()
        .filter(|funnel| funnel.enrolled > 0)
    else {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CHART_WIDTH} 60\"><text x=\"{}\" y=\"34\" \
             font-size=\"14\" text-anchor=\"middle\" fill=\"#6b7280\">{}</text></svg>\n",
            CHART_WIDTH / 2.0,
            escape(words.no_data)
        );
    };
    let stages = stages(funnel, words);
    let programme_stages = programme
        .funnel
        .as_ref()
        .filter(|funnel| funnel.enrolled > 0)
        .map(|funnel| stages_shares(funnel, words));
    let height = 34.0 + FUNNEL_ROW * stages.len() as f64 + 8.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(words.funnel_chart)
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{FUNNEL_LABEL}\" y=\"8\" width=\"14\" height=\"10\" fill=\"{CHAPTER_COLOUR}\"/>\
         <text x=\"{:.1}\" y=\"17\" font-size=\"12\">{}</text>\
         <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"6\" y2=\"20\" stroke=\"#111827\" stroke-width=\"3\"/>\
         <text x=\"{:.1}\" y=\"17\" font-size=\"12\">{}</text>",
        FUNNEL_LABEL + 19.0,
        escape(words.share_of_enrolled),
        FUNNEL_LABEL + 150.0,
        FUNNEL_LABEL + 150.0,
        FUNNEL_LABEL + 158.0,
        escape(words.funnel_legend_programme)
    );
    #[allow(clippy::cast_precision_loss)] // Counts stay far below 2^52.
    let share = |value: u64| value as f64 / funnel.enrolled as f64;
    for (row, (label, value, colour)) in stages.iter().enumerate() {
        let top = 30.0 + FUNNEL_ROW * row as f64;
        let width = share(*value).clamp(0.0, 1.0) * FUNNEL_BARS;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>\
             <rect x=\"{FUNNEL_LABEL}\" y=\"{:.1}\" width=\"{FUNNEL_BARS}\" height=\"{:.1}\" fill=\"#f3f4f6\"/>\
             <rect x=\"{FUNNEL_LABEL}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{} ({})</text>",
            FUNNEL_LABEL - 8.0,
            top + 13.0,
            escape(label),
            top + 2.0,
            FUNNEL_ROW - 5.0,
            top + 2.0,
            FUNNEL_ROW - 5.0,
            FUNNEL_LABEL + FUNNEL_BARS + 8.0,
            top + 13.0,
            escape(&lang.number(*value)),
            escape(&lang.percent(share(*value)))
        );
        if let Some(programme_share) = programme_stages.as_ref().and_then(|shares| shares.get(row))
        {
            let at = FUNNEL_LABEL + programme_share.clamp(0.0, 1.0) * FUNNEL_BARS;
            let _ = writeln!(
                svg,
                "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#111827\" stroke-width=\"3\"/>",
                top,
                top + FUNNEL_ROW - 1.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn stages(funnel: &Funnel, words: &Words) -> Vec<(String, u64, &'static str)> {
    let mut stages = vec![
        (words.enrolled.to_owned(), funnel.enrolled, ENROLLED_COLOUR),
        (words.started.to_owned(), funnel.started, STARTED_COLOUR),
    ];
    for (index, completed) in funnel.chapters_completed.iter().enumerate() {
        stages.push((
            format!("{} {}", words.chapter, index + 1),
            *completed,
            CHAPTER_COLOUR,
        ));
    }
    stages.push((
        words.certified.to_owned(),
        funnel.certified,
        CERTIFIED_COLOUR,
    ));
    stages
}

#[allow(clippy::cast_precision_loss)] // Counts stay far below 2^52.
fn stages_shares(funnel: &Funnel, words: &Words) -> Vec<f64> {
    stages(funnel, words)
        .into_iter()
        .map(|(_, value, _)| value as f64 / funnel.enrolled as f64)
        .collect()
}

/// The first day of each month from `first` to `last`.
fn month_starts(first: NaiveDate, last: NaiveDate) -> Vec<NaiveDate> {
    let mut month = first.with_day(1).unwrap_or(first);
    if month < first {
        month = next_month(month);
    }
    let mut months = Vec::new();
    while month <= last {
        months.push(month);
        month = next_month(month);
    }
    months
}

fn next_month(date: NaiveDate) -> NaiveDate {
    date.checked_add_months(chrono::Months::new(1))
        .unwrap_or(NaiveDate::MAX)
}

/// The smallest round number (4, 6, 8, 10, 12, 16 or 20 × 10ⁿ, so that quarters of it are round
/// too, for the grid) at or above `value`.
fn nice_ceiling(value: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for step in [4, 6, 8, 10, 12, 16, 20] {
            let candidate = step * magnitude;
            if candidate >= value.max(4) {
                return candidate;
            }
        }
        magnitude = magnitude.saturating_mul(10);
        if magnitude > u64::MAX / 100 {
            return value;
        }
    }
}

fn display_name(report: &Report) -> String {
    if report.name.is_empty() {
        report.campaign.clone()
    } else {
        report.name.clone()
    }
}

fn programme_name(report: &Report) -> String {
    if report.programme_name.is_empty() {
        "suivi".to_owned()
    } else {
        report.programme_name.clone()
    }
}

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_would_read() {
        assert_eq!(
            escape("<b>\"A&B\"</b> l'x"),
            "&lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt; l&#39;x"
        );
    }

    #[test]
    fn grid_ceilings_are_round() {
        for (value, ceiling) in [
            (0, 4),
            (3, 4),
            (5, 6),
            (9, 10),
            (65_000, 80_000),
            (56_000, 60_000),
            (100_001, 120_000),
            (110_000, 120_000),
            (150, 160),
        ] {
            assert_eq!(nice_ceiling(value), ceiling, "{value}");
        }
    }

    #[test]
    fn months_on_the_axis() {
        let day = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a date");
        assert_eq!(
            month_starts(day("2020-10-05"), day("2021-01-26")),
            [day("2020-11-01"), day("2020-12-01"), day("2021-01-01")]
        );
        assert_eq!(
            month_starts(day("2020-10-01"), day("2020-10-31")),
            [day("2020-10-01")]
        );
    }
}
