//! The pages people open in a browser: `GET /partners/{campaign}` (one partner's live page) and
//! `GET /` (the programme at a glance), server-rendered HTML in French (default) or English
//! (`?lang=en`) that reads fully without JavaScript; the one script (`/assets/pages.js`, served
//! from here) only swaps in the parts that changed, pushed over server-sent events
//! (`…/live`) from the same change signal as `WatchCampaigns` ([`Figures::subscribe`]). Nothing
//! is fetched from outside suivi (the Content-Security-Policy says so too).
//!
//! Access is the figures' own: a page shows what the caller's `figures:read` grant reaches (a
//! campaign out of reach is answered exactly as one that does not exist, the programme's figures
//! only with the totals), and downloads of reports what `reports:read` reaches. A caller is let
//! in by an `Authorization` header (bearer, or HTTP Basic with the token as password, which a
//! browser asks for after a 401 here) or by a signed read-only link's `?key=` (`auth::link`);
//! every link on a page carries the key on. Pages never reach the aggregator: they read
//! [`Figures`] like the query routes, and draw the report's charts (`report::charts`).
//!
//! `partner` and `programme` build each page as named *slots* (element id → HTML), the same
//! function giving the first render and every live update; `live` streams the slots that
//! changed; `words` holds the texts.

mod live;
mod partner;
mod programme;
pub mod words;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::auth::link::LINK_PARAMETER;
use crate::auth::{Caller, Gate, Unauthenticated};
use crate::figures::Figures;
use crate::query::{Readiness, State as Life};
use crate::report::Lang;
use crate::report::html::escape;
use words::{PageWords, words};

/// What the pages read.
#[derive(Debug, Clone)]
pub struct PagesState {
    pub figures: Arc<Figures>,
    pub gate: Arc<Gate>,
    pub readiness: Arc<Readiness>,
    /// Days, forecasts and instants are in this zone.
    pub time_zone: Tz,
    /// Live updates are sent at most once per this interval (`watch_interval`).
    pub watch_interval: Duration,
    /// Live streams end when suivi shuts down.
    pub shutdown: CancellationToken,
}

/// The pages and their script. Each route lets its caller in itself ([`let_in`]), answering a
/// person (HTML) rather than a program (JSON) when it cannot.
pub fn routes(state: PagesState) -> Router {
    Router::new()
        .route("/", get(programme::page))
        .route("/live", get(programme::live))
        .route("/partners/{campaign}", get(partner::page))
        .route("/partners/{campaign}/live", get(partner::live))
        .route_layer(middleware::from_fn_with_state(state.clone(), let_in))
        .route("/assets/pages.js", get(script))
        .with_state(state)
}

/// The query every page takes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    lang: Option<String>,
    key: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
}

/// How a page is asked for: its language, and the link key its links carry on.
#[derive(Debug, Clone)]
struct Ask {
    lang: Lang,
    key: Option<String>,
}

impl PageQuery {
    fn ask(&self) -> Ask {
        Ask {
            // An unknown language shows the page in French rather than an error.
            lang: self
                .lang
                .as_deref()
                .and_then(|text| text.parse().ok())
                .unwrap_or(Lang::Fr),
            key: self.key.clone().filter(|key| !key.is_empty()),
        }
    }
}

impl Ask {
    /// `path` with the language, the key and `extra` parameters, as a link on a page.
    fn href(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("lang", &self.lang.to_string());
        for (name, value) in extra {
            query.append_pair(name, value);
        }
        if let Some(key) = &self.key {
            query.append_pair(LINK_PARAMETER, key);
        }
        format!("{path}?{}", query.finish())
    }

    fn in_lang(&self, lang: Lang) -> Ask {
        Ask {
            lang,
            key: self.key.clone(),
        }
    }
}

/// A campaign id as a path segment.
fn path_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Lets a page's caller in: by its `Authorization` header, else by the `key` of a signed link;
/// then only once the figures are recovered. Refusals are pages.
async fn let_in(
    State(state): State<PagesState>,
    Query(query): Query<PageQuery>,
    mut request: Request,
    next: Next,
) -> Response {
    let lang = query.ask().lang;
    let caller = match (request.headers().get(header::AUTHORIZATION), &query.key) {
        (Some(authorization), _) => state.gate.authenticate(Some(authorization.as_bytes())),
        (None, Some(key)) if !key.is_empty() => state.gate.authenticate_link(key),
        (None, _) => state.gate.authenticate(None),
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(failure) => return refused(lang, failure, state.time_zone),
    };
    if state.readiness.get() != Life::Ready {
        let words = words(lang);
        let mut response = error_page(
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            words.not_ready,
            words.not_ready_detail,
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// 401 as a page. Without a link, the Basic challenge lets a browser ask for the token (as the
/// password); a refused link says why (when it expired, in the programme's time zone), and asks
/// for nothing.
fn refused(lang: Lang, failure: Unauthenticated, time_zone: Tz) -> Response {
    let words = words(lang);
    let link = matches!(
        failure,
        Unauthenticated::LinkInvalid | Unauthenticated::LinkExpired { .. }
    );
    let detail = match failure {
        Unauthenticated::LinkInvalid => words.link_invalid.to_owned(),
        Unauthenticated::LinkExpired { expired } => words
            .link_expired
            .replace("{date}", &lang.instant(expired, time_zone)),
        _ => format!("{} ({failure})", words.unauthenticated_detail),
    };
    let mut response = error_page(
        lang,
        StatusCode::UNAUTHORIZED,
        words.unauthenticated,
        &detail,
    );
    if !link {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"suivi\", charset=\"UTF-8\""),
        );
    }
    response
}

/// A page saying what went wrong, with `status`.
fn error_page(lang: Lang, status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        "<main id=\"content\" class=\"page\"><h1>{}</h1><p>{}</p></main>",
        escape(title),
        escape(detail)
    );
    html_response(status, shell(lang, title, &body, None))
}

/// 403 as a page: the caller's credential reads no figures at all (an LMS's, say).
fn forbidden(lang: Lang) -> Response {
    let words = words(lang);
    error_page(
        lang,
        StatusCode::FORBIDDEN,
        words.unauthenticated,
        words.forbidden,
    )
}

/// A campaign the caller may not read, or that does not exist: the same page.
fn not_found(lang: Lang) -> Response {
    let words = words(lang);
    error_page(
        lang,
        StatusCode::NOT_FOUND,
        words.not_found,
        words.not_found_detail,
    )
}

/// An HTML answer with the headers every page has: nothing from elsewhere, no referrer (a link's
/// key is in the address), never cached (the figures are live).
fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    security_headers(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The one script: live updates over server-sent events.
async fn script() -> Response {
    let mut response = include_str!("pages.js").into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Colours meet WCAG AA on their backgrounds (text ≥ 4.5:1): #111827, #374151 and #4b5563 on
/// white and on #f9fafb, #1d4ed8 and #047857 on white, white on #1d4ed8.
const STYLE: &str = r#"
* { box-sizing: border-box; }
html { background: #f3f4f6; }
body { margin: 0; color: #111827; font: 16px/1.5 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
a { color: #1d4ed8; }
a:focus-visible, [tabindex]:focus-visible { outline: 3px solid #b45309; outline-offset: 2px; }
.skip { position: absolute; left: -9999px; top: 0; background: #1d4ed8; color: #fff; padding: 8px 12px; }
.skip:focus { left: 8px; top: 8px; z-index: 10; }
.page { max-width: 1040px; margin: 0 auto; padding: 20px 24px 40px; background: #fff; }
header.top { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline; justify-content: space-between;
  border-bottom: 3px solid #1d4ed8; padding-bottom: 10px; margin-bottom: 16px; }
.kicker { margin: 0; color: #1d4ed8; font-weight: bold; letter-spacing: .04em; text-transform: uppercase; font-size: 13px; }
h1 { margin: 4px 0 2px; font-size: 28px; line-height: 1.2; }
h2 { font-size: 19px; margin: 28px 0 10px; }
.meta { margin: 4px 0 0; color: #4b5563; font-size: 14px; }
.status { font-weight: bold; color: #047857; }
nav.tools { display: flex; gap: 12px; font-size: 15px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px; }
.card { border: 1px solid #d1d5db; border-radius: 6px; padding: 10px 14px; }
.card .label { color: #374151; font-size: 14px; margin: 0; }
.card .value { font-size: 26px; font-weight: bold; margin: 2px 0; }
.card .detail { color: #4b5563; font-size: 13.5px; margin: 0; }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: 15px; }
caption { text-align: left; color: #374151; font-size: 14px; padding-bottom: 6px; }
th, td { padding: 6px 8px; border-bottom: 1px solid #e5e7eb; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; }
thead th { color: #111827; border-bottom: 2px solid #6b7280; vertical-align: bottom; white-space: normal; }
td[id$="-forecast"] { white-space: normal; text-align: left; min-width: 12em; }
#forecast, #totals-forecast { font-size: 19px; }
th a { color: #111827; }
td.programme, th.programme { background: #f9fafb; color: #374151; }
.up { color: #047857; } .down { color: #b91c1c; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
.note { color: #374151; font-size: 14px; }
ul.reports { padding-left: 20px; }
ul.reports li { margin: 4px 0; }
@media (max-width: 600px) {
  .page { padding: 12px 12px 32px; }
  h1 { font-size: 23px; }
  .card .value { font-size: 22px; }
  th, td { padding: 5px 5px; font-size: 14px; }
}
"#;

/// The whole page around `body`; with `live`, the address of its live updates, for the script.
fn shell(lang: Lang, title: &str, body: &str, live: Option<&str>) -> String {
    let page_words: &PageWords = words(lang);
    let live_attributes = live
        .map(|live| {
            format!(
                " data-live=\"{}\" data-live-on=\"{}\" data-live-off=\"{}\" data-live-ended=\"{}\"",
                escape(live),
                escape(page_words.live_on),
                escape(page_words.live_off),
                escape(page_words.live_ended)
            )
        })
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n<script src=\"/assets/pages.js\" defer></script>\n</head>\n\
         <body{live_attributes}>\n<a class=\"skip\" href=\"#content\">{}</a>\n{body}\n</body>\n</html>\n",
        escape(title),
        escape(page_words.skip_to_content),
    )
}

/// A figure on a card; `id` names the slots of its value and detail.
fn card(id: &str, label: &str, slots: &Slots) -> String {
    format!(
        "<div class=\"card\"><p class=\"label\">{}</p><p class=\"value\" id=\"{id}\">{}</p>\
         <p class=\"detail\" id=\"{id}-detail\">{}</p></div>",
        escape(label),
        slots.get(id),
        slots.get(&format!("{id}-detail"))
    )
}

/// The parts of a page that change with the figures: element id → its inner HTML.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slots(Vec<(String, String)>);

impl Slots {
    fn set(&mut self, id: impl Into<String>, html: impl Into<String>) {
        self.0.push((id.into(), html.into()));
    }

    fn text(&mut self, id: impl Into<String>, text: &str) {
        self.set(id, escape(text));
    }

    fn get(&self, id: &str) -> &str {
        self.0
            .iter()
            .find(|(slot, _)| slot == id)
            .map_or("", |(_, html)| html.as_str())
    }

    /// The slots of `self` that differ from `before`.
    fn changed_since(&self, before: &Slots) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(id, html)| before.get(id) != html.as_str() || !before.has(id))
            .cloned()
            .collect()
    }

    fn has(&self, id: &str) -> bool {
        self.0.iter().any(|(slot, _)| slot == id)
    }
}

/// Today in the programme's zone.
fn today(state: &PagesState) -> NaiveDate {
    chrono::Utc::now()
        .with_timezone(&state.time_zone)
        .date_naive()
}

/// The header of both pages: kicker, title, freshness and live status, the language switch.
fn header(ask: &Ask, kicker: &str, title: &str, path: &str, slots: &Slots) -> String {
    let page_words = words(ask.lang);
    let other = match ask.lang {
        Lang::Fr => Lang::En,
        Lang::En => Lang::Fr,
    };
    format!(
        "<header class=\"top\"><div><p class=\"kicker\">{}</p><h1>{}</h1>\
         <p class=\"meta\">{} <span id=\"as-of\">{}</span> · \
         <span class=\"status\" id=\"live-status\" role=\"status\">{}</span></p></div>\
         <nav class=\"tools\" aria-label=\"{}\"><a href=\"{}\" hreflang=\"{}\" lang=\"{}\">{}</a></nav></header>",
        escape(kicker),
        escape(title),
        escape(page_words.figures_as_of),
        slots.get("as-of"),
        escape(page_words.live_static),
        escape(page_words.other_language),
        escape(&ask.in_lang(other).href(path, &[])),
        page_words.other_language_name,
        page_words.other_language_name,
        escape(page_words.other_language),
    )
}

/// Whether `caller` may read the campaign's figures (and it exists): else the page is a 404.
fn readable(state: &PagesState, caller: &Caller, campaign: &str) -> bool {
    caller.may_read(crate::auth::Read::Figures, campaign)
        && state.figures.campaign(campaign).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_language_and_the_key_escaped() {
        let ask = Ask {
            lang: Lang::En,
            key: Some("link1.a+b".to_owned()),
        };
        assert_eq!(
            ask.href("/partners/x", &[("sort", "enrolled")]),
            "/partners/x?lang=en&sort=enrolled&key=link1.a%2Bb"
        );
        assert_eq!(path_segment("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn only_changed_slots_are_sent_again() {
        let mut before = Slots::default();
        before.text("a", "1");
        before.text("b", "<2>");
        let mut after = Slots::default();
        after.text("a", "1");
        after.text("b", "3");
        after.text("c", "");
        assert_eq!(
            after.changed_since(&before),
            [
                ("b".to_owned(), "3".to_owned()),
                ("c".to_owned(), String::new())
            ]
        );
        assert_eq!(before.get("b"), "&lt;2&gt;");
    }
}
