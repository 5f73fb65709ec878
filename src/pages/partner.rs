//! `GET /partners/{campaign}`: one partner's live page — the headline figures and forecast, the
//! funnel (clicks → enrolled → started → each chapter → certified) with the rate of each step
//! and, with the totals, the programme's; the cumulative curves with the target line and where
//! learners stop (the report's charts, drawn for the current half-quarter from the live
//! figures); this half-quarter against the previous one; and the reports of past periods to
//! download. `GET /partners/{campaign}/live` streams the same page's changed slots.

use std::collections::BTreeMap;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;

use super::words::{instant_seconds, words};
use super::{
    Ask, PageQuery, PagesState, Slots, card, forbidden, header, html_response, live as stream,
    not_found, path_segment, readable, shell, today,
};
use crate::auth::{Caller, Read};
use crate::day::Day;
use crate::event::{TOTALS_CAMPAIGN, campaign_id};
use crate::figures::{CampaignCounters, DayCounters};
use crate::forecast::{self, Forecast};
use crate::report::html::escape;
use crate::report::period::{self, HalfQuarter};
use crate::report::store::{Stamped, StoredCampaign};
use crate::report::{Lang, Report, ReportFigures, charts};

/// The most past periods offered for download.
const MAX_REPORT_PERIODS: usize = 8;

/// What the page shows, read once from the figures.
struct View {
    counters: CampaignCounters,
    forecast: Option<Forecast>,
    /// The current half-quarter as a report (the charts' input), with the programme's figures
    /// when the caller may read the totals.
    report: Report,
    programme: Option<CampaignCounters>,
    timeline: BTreeMap<Day, DayCounters>,
}

pub(super) async fn page(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
    Path(campaign): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let ask = query.ask();
    if caller.require_read(Read::Figures).is_err() {
        return forbidden(ask.lang);
    }
    let campaign = campaign_id(&campaign);
    let Some(view) = view(&state, &caller, &campaign) else {
        return not_found(ask.lang);
    };
    let slots = slots(&view, &ask, &state);
    let path = format!("/partners/{}", path_segment(&campaign));
    let live = ask.href(&format!("{path}/live"), &[]);
    let title = format!(
        "{} — {}",
        display_name(&view.counters),
        view.report.programme_name
    );
    let body = body(&view, &ask, &caller, &slots, &path);
    html_response(StatusCode::OK, shell(ask.lang, &title, &body, Some(&live)))
}

pub(super) async fn live(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
    Path(campaign): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let ask = query.ask();
    if caller.require_read(Read::Figures).is_err() {
        return forbidden(ask.lang);
    }
    let campaign = campaign_id(&campaign);
    if !readable(&state, &caller, &campaign) {
        return not_found(ask.lang);
    }
    let make_state = state.clone();
    stream::respond(state, caller, move |caller: &Caller| {
        view(&make_state, caller, &campaign).map(|view| slots(&view, &ask, &make_state))
    })
}

fn view(state: &PagesState, caller: &Caller, campaign: &str) -> Option<View> {
    if !readable(state, caller, campaign) {
        return None;
    }
    let counters = state.figures.campaign(campaign)?;
    let timeline: BTreeMap<Day, DayCounters> = state
        .figures
        .timeline(campaign, None, None)?
        .into_iter()
        .map(|day| (day.day, day))
        .collect();
    let today = today(state);
    let period = HalfQuarter::containing(today).period();
    let figures_of = |counters: &CampaignCounters, timeline: BTreeMap<Day, DayCounters>| {
        crate::report::figures(
            &StoredCampaign {
                latest: Some(Stamped {
                    taken_at: counters.as_of,
                    counters: counters.clone(),
                }),
                as_of_end: None,
                timeline,
            },
            &period,
            state.time_zone,
        )
    };
    let programme = caller
        .may_read_totals(Read::Figures)
        .then(|| state.figures.totals());
    let programme_figures = programme.as_ref().map(|totals| {
        let timeline = state
            .figures
            .timeline(TOTALS_CAMPAIGN, None, None)
            .unwrap_or_default()
            .into_iter()
            .map(|day| (day.day, day))
            .collect();
        figures_of(totals, timeline)
    });
    let days: Vec<DayCounters> = timeline.values().copied().collect();
    let forecast = forecast::forecast(&days, counters.certified, counters.target, today);
    let figures = figures_of(&counters, timeline.clone());
    let report = Report {
        campaign: campaign.to_owned(),
        name: counters.name.clone(),
        registered: counters.registered,
        programme_name: state.figures.totals().name,
        previous_period: period.previous(),
        period,
        time_zone: state.time_zone.name().to_owned(),
        source: "live",
        latest_snapshot: None,
        generated_at: Utc::now(),
        figures,
        programme: programme_figures,
    };
    Some(View {
        counters,
        forecast,
        report,
        programme,
        timeline,
    })
}

/// The partner's name, or its campaign id when unregistered.
fn display_name(counters: &CampaignCounters) -> String {
    if counters.name.is_empty() {
        counters.campaign.clone()
    } else {
        counters.name.clone()
    }
}

#[allow(clippy::cast_precision_loss)] // Counts stay far below 2^52.
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn percent(lang: Lang, ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".to_owned(), |ratio| lang.percent(ratio))
}

/// Every part of the page that changes with the figures.
fn slots(view: &View, ask: &Ask, state: &PagesState) -> Slots {
    let lang = ask.lang;
    let report_words = lang.words();
    let page_words = words(lang);
    let counters = &view.counters;
    let mut slots = Slots::default();
    slots.text(
        "as-of",
        &instant_seconds(lang, counters.as_of, state.time_zone),
    );
    slots.text("enrolled", &lang.number(counters.enrolled));
    slots.text(
        "enrolled-detail",
        &lang.label_value(page_words.clicks, &lang.number(counters.clicks)),
    );
    slots.text("certified", &lang.number(counters.certified));
    slots.text(
        "certified-detail",
        &lang.label_value(
            report_words.completion_rate,
            &percent(lang, ratio(counters.certified, counters.enrolled)),
        ),
    );
    slots.text("progress", &percent(lang, counters.progress));
    slots.text(
        "progress-detail",
        &counters.target.map_or_else(
            || report_words.no_target.to_owned(),
            |target| lang.label_value(report_words.target, &lang.number(target)),
        ),
    );
    slots.text("forecast", &lang.forecast(view.forecast.as_ref()));
    slots.text(
        "forecast-detail",
        &view
            .forecast
            .as_ref()
            .map(|forecast| lang.pace(forecast))
            .unwrap_or_default(),
    );
    slots.set("funnel-rows", funnel_rows(view, lang));
    slots.set("largest-drop", escape(&largest_drop(counters, lang)));
    slots.set(
        "cumulative-chart",
        charts::cumulative_chart(&view.report, lang, counters.target),
    );
    slots.set(
        "funnel-chart",
        charts::funnel_chart(&view.report.figures, view.report.programme.as_ref(), lang),
    );
    slots.set("period-rows", period_rows(&view.report.figures, lang));
    slots
}

/// The funnel, one row per stage: its learners, the share of the step before, the share of the
/// enrolled, and the programme's share of the enrolled when the caller may see it.
fn funnel_rows(view: &View, lang: Lang) -> String {
    let counters = &view.counters;
    let stages = stages(counters, lang);
    let programme_stages = view.programme.as_ref().map(stages_values);
    let programme_enrolled = view.programme.as_ref().map_or(0, |p| p.enrolled);
    let mut rows = String::new();
    let mut previous: Option<u64> = None;
    for (index, (label, value)) in stages.iter().enumerate() {
        // Clicks come before enrolment and are not learners: no share of the enrolled.
        let of_enrolled = if index == 0 {
            "—".to_owned()
        } else {
            percent(lang, ratio(*value, counters.enrolled))
        };
        rows.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td>",
            escape(label),
            escape(&lang.number(*value)),
            escape(&previous.map_or_else(
                || "—".to_owned(),
                |previous| percent(lang, ratio(*value, previous))
            )),
            escape(&of_enrolled),
        ));
        if let Some(programme) = &programme_stages {
            let share = if index == 0 {
                "—".to_owned()
            } else {
                percent(lang, ratio(programme[index], programme_enrolled))
            };
            rows.push_str(&format!("<td class=\"programme\">{}</td>", escape(&share)));
        }
        rows.push_str("</tr>");
        previous = Some(*value);
    }
    rows
}

/// The stages of the funnel in order, with their labels.
fn stages(counters: &CampaignCounters, lang: Lang) -> Vec<(String, u64)> {
    let report_words = lang.words();
    let mut labels = vec![
        words(lang).clicks.to_owned(),
        report_words.enrolled.to_owned(),
        report_words.started.to_owned(),
    ];
    for chapter in 1..=counters.chapters_completed.len() {
        labels.push(format!("{} {chapter}", report_words.chapter));
    }
    labels.push(report_words.certified.to_owned());
    labels.into_iter().zip(stages_values(counters)).collect()
}

fn stages_values(counters: &CampaignCounters) -> Vec<u64> {
    let mut values = vec![counters.clicks, counters.enrolled, counters.started];
    values.extend(&counters.chapters_completed);
    values.push(counters.certified);
    values
}

/// Where most learners stop: the largest fall between two stages from `started` on.
fn largest_drop(counters: &CampaignCounters, lang: Lang) -> String {
    let page_words = words(lang);
    let stages = stages(counters, lang);
    // From "started" (index 2) on: before it, clicks and enrolments are not a course's steps.
    let drop = stages[2..]
        .windows(2)
        .map(|pair| (pair, pair[0].1.saturating_sub(pair[1].1)))
        .max_by_key(|(_, lost)| *lost)
        .filter(|(_, lost)| *lost > 0);
    match drop {
        None => page_words.no_drop.to_owned(),
        Some((pair, lost)) => lang.label_value(
            page_words.largest_drop,
            &format!(
                "{} → {} ({} {}, {})",
                pair[0].0,
                pair[1].0,
                lang.signed(-i64::try_from(lost).unwrap_or(i64::MAX)),
                page_words.learners.to_lowercase(),
                percent(lang, ratio(lost, pair[0].1))
            ),
        ),
    }
}

/// This half-quarter so far, the previous one, and the change.
fn period_rows(figures: &ReportFigures, lang: Lang) -> String {
    let report_words = lang.words();
    let page_words = words(lang);
    let rows: [(&str, u64, u64, i64); 4] = [
        (
            page_words.clicks,
            figures.in_period.clicks,
            figures.in_previous_period.clicks,
            figures.change.clicks,
        ),
        (
            report_words.enrolled,
            figures.in_period.enrolled,
            figures.in_previous_period.enrolled,
            figures.change.enrolled,
        ),
        (
            report_words.started,
            figures.in_period.started,
            figures.in_previous_period.started,
            figures.change.started,
        ),
        (
            report_words.certified,
            figures.in_period.certified,
            figures.in_previous_period.certified,
            figures.change.certified,
        ),
    ];
    rows.iter()
        .map(|(label, now, before, change)| {
            let class = match change {
                c if *c > 0 => " class=\"up\"",
                c if *c < 0 => " class=\"down\"",
                _ => "",
            };
            format!(
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td{class}>{}</td></tr>",
                escape(label),
                escape(&lang.number(*now)),
                escape(&lang.number(*before)),
                escape(&lang.signed(*change))
            )
        })
        .collect()
}

/// The past half-quarters with figures, newest first, up to [`MAX_REPORT_PERIODS`].
fn report_periods(
    timeline: &BTreeMap<Day, DayCounters>,
    today: chrono::NaiveDate,
) -> Vec<HalfQuarter> {
    let last = period::last_completed(today);
    let mut periods: Vec<HalfQuarter> = timeline
        .keys()
        .map(|day| HalfQuarter::containing(day.date()))
        .filter(|half_quarter| *half_quarter <= last)
        .collect();
    periods.dedup();
    periods.reverse();
    periods.truncate(MAX_REPORT_PERIODS);
    periods
}

fn body(view: &View, ask: &Ask, caller: &Caller, slots: &Slots, path: &str) -> String {
    let lang = ask.lang;
    let report_words = lang.words();
    let page_words = words(lang);
    let counters = &view.counters;
    let mut body = String::from("<div class=\"page\">");
    body.push_str(&header(
        ask,
        &format!("{} · {}", view.report.programme_name, page_words.live_page),
        &display_name(counters),
        path,
        slots,
    ));
    body.push_str("<main id=\"content\" tabindex=\"-1\">");
    // The headline figures.
    body.push_str("<section class=\"cards\" aria-label=\"");
    body.push_str(&escape(report_words.figures));
    body.push_str("\">");
    body.push_str(&card("enrolled", report_words.enrolled, slots));
    body.push_str(&card("certified", report_words.certified, slots));
    body.push_str(&card("progress", report_words.progress, slots));
    body.push_str(&card("forecast", page_words.forecast, slots));
    body.push_str("</section>");

    // The funnel.
    let programme_header = if view.programme.is_some() {
        format!(
            "<th scope=\"col\" class=\"programme\">{}</th>",
            escape(page_words.programme_of_enrolled)
        )
    } else {
        String::new()
    };
    body.push_str(&format!(
        "<h2 id=\"funnel\">{}</h2><div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-labelledby=\"funnel\">\
         <table><thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th>\
         <th scope=\"col\">{}</th>{programme_header}</tr></thead><tbody id=\"funnel-rows\">{}</tbody></table></div>",
        escape(page_words.funnel),
        escape(page_words.stage),
        escape(page_words.learners),
        escape(page_words.of_previous_step),
        escape(page_words.of_enrolled),
        slots.get("funnel-rows"),
    ));

    // The charts.
    body.push_str(&format!(
        "<h2>{}</h2><figure id=\"cumulative-chart\">{}</figure>",
        escape(report_words.cumulative_chart),
        slots.get("cumulative-chart")
    ));
    body.push_str(&format!(
        "<h2>{}</h2><p id=\"largest-drop\">{}</p><figure id=\"funnel-chart\">{}</figure>",
        escape(page_words.where_they_stop),
        slots.get("largest-drop"),
        slots.get("funnel-chart")
    ));

    // This period against the previous one.
    let figures_period = &view.report;
    body.push_str(&format!(
        "<h2 id=\"period\">{}</h2><div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-labelledby=\"period\">\
         <table><thead><tr><th scope=\"col\"></th><th scope=\"col\">{}</th><th scope=\"col\">{}<br>{}</th>\
         <th scope=\"col\">{}</th></tr></thead><tbody id=\"period-rows\">{}</tbody></table></div>",
        escape(page_words.this_period),
        escape(&lang.period(&figures_period.period)),
        escape(page_words.previous_half_quarter),
        escape(&lang.period(&figures_period.previous_period)),
        escape(report_words.change),
        slots.get("period-rows"),
    ));

    // Reports of past periods.
    if caller.may_read(Read::Reports, &counters.campaign) {
        body.push_str(&format!("<h2>{}</h2>", escape(page_words.reports)));
        let periods = report_periods(&view.timeline, view.report.period.from);
        if periods.is_empty() {
            body.push_str(&format!("<p>{}</p>", escape(page_words.no_reports)));
        } else {
            body.push_str(&format!(
                "<p>{}</p><ul class=\"reports\">",
                escape(page_words.reports_intro)
            ));
            let report_path = format!("/v1/campaigns/{}/report", path_segment(&counters.campaign));
            for half_quarter in periods {
                let name = half_quarter.to_string();
                let link = |format: &str| {
                    escape(&ask.href(&report_path, &[("period", &name), ("format", format)]))
                };
                body.push_str(&format!(
                    "<li>{} — <a href=\"{}\">HTML</a> · <a href=\"{}\" download>CSV</a></li>",
                    escape(&lang.period(&half_quarter.period())),
                    link("html"),
                    link("csv"),
                ));
            }
            body.push_str("</ul>");
        }
    }

    body.push_str(&format!(
        "<h2>{}</h2><p class=\"note\">{}</p>",
        escape(page_words.forecast),
        escape(page_words.forecast_method)
    ));
    body.push_str(&format!(
        "<p><a href=\"{}\">{}</a></p>",
        escape(&ask.href("/", &[])),
        escape(page_words.back_to_programme)
    ));
    body.push_str("</main></div>");
    body
}
