//! The report's charts, as inline SVG: the cumulative enrolments and certificates from the first
//! day with data to the end of the period (the period shaded, a month grid, round ceilings), and
//! the chapter funnel (each stage as a share of the enrolled, the programme's share marked when
//! the report has the programme's figures).
//! The live partner page (`pages`) draws the same charts, the cumulative one with the target line.
//! Coordinates are in the SVG's own units; the SVG scales to the page's width. Every text comes
//! from `Lang`; every text from the data is escaped.

use std::fmt::Write;

use chrono::{Datelike, Days, NaiveDate};

use super::html::escape;
use crate::report::lang::{Lang, Words};
use crate::report::{CumulativeDay, Funnel, Report, ReportFigures};

/// One running total of a [`CumulativeDay`].
type DayCount = fn(&CumulativeDay) -> u64;

const ENROLLED_COLOUR: &str = "#1d4ed8";
const CERTIFIED_COLOUR: &str = "#047857";
const STARTED_COLOUR: &str = "#6d28d9";
const CHAPTER_COLOUR: &str = "#0e7490";
const PERIOD_COLOUR: &str = "#fde68a";
const TARGET_COLOUR: &str = "#b45309";

// The charts. Coordinates are in the SVG's own units; the SVG scales to the page's width.

const CHART_WIDTH: f64 = 760.0;
const CHART_HEIGHT: f64 = 290.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 92.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 34.0;

/// Cumulative enrolled and certified from the first day with data to the end of the period,
/// the period shaded; with `target`, a dashed line at the target (which the axis then reaches).
pub fn cumulative_chart(report: &Report, lang: Lang, target: Option<u64>) -> String {
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
        .map_or(0, |day| day.enrolled.max(day.certified))
        .max(target.unwrap_or(0));
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
    if let Some(target) = target {
        let _ = writeln!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{TARGET_COLOUR}\" \
             stroke-width=\"2\" stroke-dasharray=\"6 4\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" font-weight=\"bold\" fill=\"{TARGET_COLOUR}\">{}</text>",
            MARGIN_LEFT + plot_width,
            y(target),
            y(target),
            x(last) + 6.0,
            y(target) + 4.0,
            escape(&lang.number(target))
        );
    }
    // The legend.
    let mut legend: Vec<(&str, &str)> = vec![
        (ENROLLED_COLOUR, words.enrolled),
        (CERTIFIED_COLOUR, words.certified),
        (PERIOD_COLOUR, words.period),
    ];
    if target.is_some() {
        legend.push((TARGET_COLOUR, words.target));
    }
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
/// with the programme's share of the same stage marked; without `programme`, the campaign's bars
/// alone, and no marker in the legend.
pub fn funnel_chart(
    campaign: &ReportFigures,
    programme: Option<&ReportFigures>,
    lang: Lang,
) -> String {
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
        .and_then(|programme| programme.funnel.as_ref())
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
         <text x=\"{:.1}\" y=\"17\" font-size=\"12\">{}</text>",
        FUNNEL_LABEL + 19.0,
        escape(words.share_of_enrolled),
    );
    if programme.is_some() {
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"6\" y2=\"20\" stroke=\"#111827\" stroke-width=\"3\"/>\
             <text x=\"{:.1}\" y=\"17\" font-size=\"12\">{}</text>",
            FUNNEL_LABEL + 150.0,
            FUNNEL_LABEL + 150.0,
            FUNNEL_LABEL + 158.0,
            escape(words.funnel_legend_programme)
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
