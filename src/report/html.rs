//! Reports as one self-contained HTML page: no script, no outside font, image or style sheet;
//! the charts are inline SVG drawn here (cumulative enrolments and certificates over time, with
//! the period shaded; the chapter funnel, with the programme's shares beside the campaign's).
//! A report made without the programme's figures shows the campaign alone: no programme column,
//! card detail, funnel marker or note.
//! The page is laid out for A4 and prints to PDF as it shows: each report starts a new page,
//! sections do not break across pages, colours are kept. Every text comes from [`Lang`]; every
//! text from the data (names, ids) is escaped.

use std::fmt::Write;

use chrono_tz::Tz;

use super::charts;
use crate::report::lang::Lang;
use crate::report::{Flow, Funnel, Report, ReportFigures};

/// One count of a [`Flow`].
type FlowCount = fn(&Flow) -> u64;

/// One rate of a [`ReportFigures`].
type Rate = fn(&ReportFigures) -> Option<f64>;

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
            .as_ref()
            .and_then(|programme| programme.completion_rate)
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
    if let Some(forecast) = &figures.forecast {
        let _ = writeln!(
            page,
            "<p class=\"caption\"><strong>{}</strong> : {} · {}</p>",
            escape(words.forecast_at_period_end),
            escape(&lang.forecast(Some(forecast))),
            escape(&lang.pace(forecast))
        );
    }

    figures_table(page, report, lang);

    let _ = writeln!(
        page,
        "<section class=\"chart\">\n<h2>{}</h2>\n{}</section>",
        words.cumulative_chart,
        charts::cumulative_chart(report, lang, None)
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
        charts::funnel_chart(&report.figures, report.programme.as_ref(), lang)
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
    let (campaign, programme) = (&report.figures, report.programme.as_ref());
    // The programme's two cells of a row (in the period, at its end), or none without it.
    let programme_cells = |in_period: &str, at_end: &dyn Fn(&ReportFigures) -> String| {
        programme.map_or_else(String::new, |programme| {
            format!(
                "<td class=\"programme\">{in_period}</td><td class=\"programme\">{}</td>",
                at_end(programme)
            )
        })
    };
    let programme_heads = if programme.is_some() {
        format!(
            "<th class=\"programme\">{}</th><th class=\"programme\">{}</th>",
            words.programme_in_period, words.programme_at_period_end
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        page,
        "<section>\n<h2>{}</h2>\n<table>\n<thead><tr><th></th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th>{programme_heads}</tr></thead>\n<tbody>",
        words.figures, words.period, words.previous_period, words.change, words.at_period_end,
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
        let programme = programme.map_or_else(String::new, |programme| {
            format!(
                "<td class=\"programme\">{}</td><td class=\"programme\">{}</td>",
                lang.number(get(&programme.in_period)),
                lang.number(get(&programme.at_period_end)),
            )
        });
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td{class}>{}</td><td>{}</td>{programme}</tr>",
            escape(label),
            lang.number(now),
            lang.number(before),
            lang.signed(change),
            lang.number(get(&campaign.at_period_end)),
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
        "<tr><td>{}</td><td>{missing}</td><td>{missing}</td><td>{missing}</td><td>{}</td>{}</tr>",
        escape(words.unique_visitors),
        visitors(&campaign.funnel),
        programme_cells(missing, &|programme| visitors(&programme.funnel)),
    );
    let rate = |rate: Option<f64>| rate.map_or_else(|| missing.to_owned(), |r| lang.percent(r));
    let rates: [(&str, Rate); 2] = [
        (words.completion_rate, |figures| figures.completion_rate),
        (words.progress, |figures| figures.progress),
    ];
    for (label, get) in rates {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{missing}</td><td>{missing}</td><td>{missing}</td><td>{}</td>{}</tr>",
            escape(label),
            rate(get(campaign)),
            programme_cells(missing, &|programme| rate(get(programme))),
        );
    }
    let target =
        |target: Option<u64>| target.map_or_else(|| missing.to_owned(), |t| lang.number(t));
    let _ = writeln!(
        page,
        "<tr><td>{}</td><td></td><td></td><td></td><td>{}</td>{}</tr>\n</tbody>\n</table>\n</section>",
        escape(words.target),
        target(campaign.target),
        programme_cells("", &|programme| target(programme.target)),
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
    if report.programme.is_some() {
        items.push(words.note_programme.to_owned());
    }
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
}
