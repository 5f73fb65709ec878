//! `GET /`: the programme at a glance — the totals against the programme's target with their
//! forecast (for a caller who may read the totals), then every partner the caller may read as a
//! row (enrolled, certified, completion rate, target, progress, forecast), each linking to its
//! page. Sorting is links (`?sort=certified&dir=desc`), so it works without the script and from
//! the keyboard. `GET /live` streams the changed cells; rows keep the order of the first render
//! (a campaign first seen meanwhile shows on the next load).

use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;

use super::words::{instant_seconds, words};
use super::{
    Ask, PageQuery, PagesState, Slots, card, forbidden, header, html_response, live as stream,
    path_segment, shell, today,
};
use crate::auth::{Caller, Read};
use crate::figures::CampaignCounters;
use crate::forecast::{self, Forecast, Outlook};
use crate::report::Lang;
use crate::report::html::escape;

/// A column of the partners' table, as `?sort=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Partner,
    Enrolled,
    Certified,
    Completion,
    Target,
    Progress,
    Forecast,
}

const COLUMNS: [Column; 7] = [
    Column::Partner,
    Column::Enrolled,
    Column::Certified,
    Column::Completion,
    Column::Target,
    Column::Progress,
    Column::Forecast,
];

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::Partner => "partner",
            Column::Enrolled => "enrolled",
            Column::Certified => "certified",
            Column::Completion => "completion_rate",
            Column::Target => "target",
            Column::Progress => "progress",
            Column::Forecast => "forecast",
        }
    }

    fn label(self, lang: Lang) -> &'static str {
        let report_words = lang.words();
        match self {
            Column::Partner => words(lang).partner,
            Column::Enrolled => report_words.enrolled,
            Column::Certified => report_words.certified,
            Column::Completion => report_words.completion_rate,
            Column::Target => report_words.target,
            Column::Progress => report_words.progress,
            Column::Forecast => words(lang).forecast,
        }
    }
}

/// One partner's row.
struct Row {
    counters: CampaignCounters,
    forecast: Option<Forecast>,
}

pub(super) async fn page(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> Response {
    let ask = query.ask();
    if caller.require_read(Read::Figures).is_err() {
        return forbidden(ask.lang);
    }
    let (column, descending) = sort_of(&query);
    let mut rows = rows(&state, &caller);
    sort(&mut rows, column, descending);
    let totals = totals(&state, &caller);
    let slots = slots(&state, &rows, totals.as_ref(), ask.lang);
    let programme_name = state.figures.totals().name;
    let page_words = words(ask.lang);
    let mut body = String::from("<div class=\"page\">");
    body.push_str(&header(
        &ask,
        &programme_name,
        page_words.at_a_glance,
        "/",
        &slots,
    ));
    body.push_str("<main id=\"content\" tabindex=\"-1\">");
    if totals.is_some() {
        let report_words = ask.lang.words();
        body.push_str(&format!(
            "<h2>{}</h2><section class=\"cards\" aria-label=\"{}\">",
            escape(page_words.programme_totals),
            escape(page_words.programme_totals)
        ));
        body.push_str(&card("totals-enrolled", report_words.enrolled, &slots));
        body.push_str(&card("totals-certified", report_words.certified, &slots));
        body.push_str(&card("totals-progress", report_words.progress, &slots));
        body.push_str(&card("totals-forecast", page_words.forecast, &slots));
        body.push_str("</section>");
    }
    body.push_str(&table(&ask, &rows, column, descending, &slots));
    body.push_str(&format!(
        "<p class=\"note\">{}</p></main></div>",
        escape(page_words.forecast_method)
    ));
    let live = ask.href("/live", &[]);
    html_response(
        StatusCode::OK,
        shell(
            ask.lang,
            &format!("{} — {}", programme_name, page_words.at_a_glance),
            &body,
            Some(&live),
        ),
    )
}

pub(super) async fn live(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> Response {
    let lang = query.ask().lang;
    if caller.require_read(Read::Figures).is_err() {
        return forbidden(lang);
    }
    let make_state = state.clone();
    stream::respond(state, caller, move |caller: &Caller| {
        let rows = rows(&make_state, caller);
        let totals = totals(&make_state, caller);
        Some(slots(&make_state, &rows, totals.as_ref(), lang))
    })
}

fn rows(state: &PagesState, caller: &Caller) -> Vec<Row> {
    let today = today(state);
    state
        .figures
        .campaigns()
        .into_iter()
        .filter(|counters| caller.may_read(Read::Figures, &counters.campaign))
        .map(|counters| Row {
            forecast: forecast::of_counters(&state.figures, &counters, today),
            counters,
        })
        .collect()
}

fn totals(state: &PagesState, caller: &Caller) -> Option<Row> {
    caller.may_read_totals(Read::Figures).then(|| {
        let counters = state.figures.totals();
        Row {
            forecast: forecast::of_counters(&state.figures, &counters, today(state)),
            counters,
        }
    })
}

fn sort_of(query: &PageQuery) -> (Column, bool) {
    let column = query
        .sort
        .as_deref()
        .and_then(|name| COLUMNS.into_iter().find(|column| column.name() == name))
        .unwrap_or(Column::Enrolled);
    let descending = match query.dir.as_deref() {
        Some("asc") => false,
        Some("desc") => true,
        // Names read A→Z, figures largest first.
        _ => column != Column::Partner,
    };
    (column, descending)
}

/// When a forecast says the target is reached, for sorting: reached first, then by date, then
/// not at the current pace, then no target.
fn forecast_key(forecast: Option<&Forecast>) -> (u8, NaiveDate) {
    match forecast.map(|forecast| forecast.outlook) {
        Some(Outlook::Reached { on }) => (0, on),
        Some(Outlook::Expected { date, .. }) => (1, date),
        Some(Outlook::NotAtCurrentPace) => (2, NaiveDate::MAX),
        None => (3, NaiveDate::MAX),
    }
}

fn sort(rows: &mut [Row], column: Column, descending: bool) {
    let name = |row: &Row| display_name(&row.counters).to_lowercase();
    rows.sort_by(|a, b| {
        let order = match column {
            Column::Partner => name(a).cmp(&name(b)),
            Column::Enrolled => a.counters.enrolled.cmp(&b.counters.enrolled),
            Column::Certified => a.counters.certified.cmp(&b.counters.certified),
            Column::Completion => a
                .counters
                .completion_rate
                .total_cmp(&b.counters.completion_rate),
            Column::Target => a.counters.target.cmp(&b.counters.target),
            Column::Progress => a
                .counters
                .progress
                .unwrap_or(-1.0)
                .total_cmp(&b.counters.progress.unwrap_or(-1.0)),
            // Soonest first when "descending" (the best first, as for the other figures).
            Column::Forecast => {
                forecast_key(b.forecast.as_ref()).cmp(&forecast_key(a.forecast.as_ref()))
            }
        };
        let order = if descending { order.reverse() } else { order };
        // Ties in a stable, readable order.
        order.then_with(|| a.counters.campaign.cmp(&b.counters.campaign))
    });
}

fn display_name(counters: &CampaignCounters) -> String {
    if counters.name.is_empty() {
        counters.campaign.clone()
    } else {
        counters.name.clone()
    }
}

/// A row's slot id: the campaign in hex, so any id makes a valid, distinct element id.
fn row_id(campaign: &str) -> String {
    let hex: String = campaign.bytes().map(|byte| format!("{byte:02x}")).collect();
    format!("c{hex}")
}

fn percent(lang: Lang, ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".to_owned(), |ratio| lang.percent(ratio))
}

/// Every figure of the page, by slot.
fn slots(state: &PagesState, rows: &[Row], totals: Option<&Row>, lang: Lang) -> Slots {
    let report_words = lang.words();
    let mut slots = Slots::default();
    let as_of = rows
        .iter()
        .chain(totals)
        .map(|row| row.counters.as_of)
        .max()
        .unwrap_or_else(chrono::Utc::now);
    slots.text("as-of", &instant_seconds(lang, as_of, state.time_zone));
    if let Some(totals) = totals {
        let counters = &totals.counters;
        slots.text("totals-enrolled", &lang.number(counters.enrolled));
        slots.text(
            "totals-enrolled-detail",
            &lang.label_value(report_words.started, &lang.number(counters.started)),
        );
        slots.text("totals-certified", &lang.number(counters.certified));
        slots.text(
            "totals-certified-detail",
            &lang.label_value(
                report_words.completion_rate,
                &lang.percent(counters.completion_rate),
            ),
        );
        slots.text("totals-progress", &percent(lang, counters.progress));
        slots.text(
            "totals-progress-detail",
            &counters.target.map_or_else(
                || report_words.no_target.to_owned(),
                |target| lang.label_value(report_words.target, &lang.number(target)),
            ),
        );
        slots.text("totals-forecast", &lang.forecast(totals.forecast.as_ref()));
        slots.text(
            "totals-forecast-detail",
            &totals
                .forecast
                .as_ref()
                .map(|forecast| lang.pace(forecast))
                .unwrap_or_default(),
        );
    }
    for row in rows {
        let id = row_id(&row.counters.campaign);
        let counters = &row.counters;
        slots.text(format!("{id}-enrolled"), &lang.number(counters.enrolled));
        slots.text(format!("{id}-certified"), &lang.number(counters.certified));
        slots.text(
            format!("{id}-completion_rate"),
            &lang.percent(counters.completion_rate),
        );
        slots.text(
            format!("{id}-target"),
            &counters
                .target
                .map_or_else(|| "—".to_owned(), |target| lang.number(target)),
        );
        slots.text(format!("{id}-progress"), &percent(lang, counters.progress));
        slots.text(
            format!("{id}-forecast"),
            &row.forecast
                .as_ref()
                .map_or_else(|| "—".to_owned(), |forecast| lang.forecast(Some(forecast))),
        );
    }
    slots
}

/// The partners' table, its headers sorting links.
fn table(ask: &Ask, rows: &[Row], sorted: Column, descending: bool, slots: &Slots) -> String {
    let lang = ask.lang;
    let page_words = words(lang);
    let mut html = format!(
        "<h2 id=\"partners\">{}</h2><div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-labelledby=\"partners\">\
         <table><thead><tr>",
        escape(page_words.partners)
    );
    for column in COLUMNS {
        let (aria, next_dir, arrow) = if column == sorted {
            if descending {
                (" aria-sort=\"descending\"", "asc", " ↓")
            } else {
                (" aria-sort=\"ascending\"", "desc", " ↑")
            }
        } else {
            (
                "",
                if column == Column::Partner {
                    "asc"
                } else {
                    "desc"
                },
                "",
            )
        };
        let direction = if next_dir == "asc" {
            page_words.ascending
        } else {
            page_words.descending
        };
        html.push_str(&format!(
            "<th scope=\"col\"{aria}><a href=\"{}\" aria-label=\"{} {} ({})\">{}{arrow}</a></th>",
            escape(&ask.href("/", &[("sort", column.name()), ("dir", next_dir)])),
            escape(page_words.sort_by),
            escape(column.label(lang)),
            escape(direction),
            escape(column.label(lang)),
        ));
    }
    html.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        html.push_str(&format!(
            "<tr><td colspan=\"{}\">{}</td></tr>",
            COLUMNS.len(),
            escape(page_words.no_partner)
        ));
    }
    for row in rows {
        let id = row_id(&row.counters.campaign);
        html.push_str(&format!(
            "<tr><th scope=\"row\"><a href=\"{}\">{}</a></th>",
            escape(&ask.href(
                &format!("/partners/{}", path_segment(&row.counters.campaign)),
                &[]
            )),
            escape(&display_name(&row.counters)),
        ));
        for column in &COLUMNS[1..] {
            let slot = format!("{id}-{}", column.name());
            html.push_str(&format!("<td id=\"{slot}\">{}</td>", slots.get(&slot)));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    html
}
