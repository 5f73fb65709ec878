//! The business gauges of `/metrics`, written at scrape time from the read model (`Figures`) of
//! the service scraped: readiness, the programme's funnel and target, and the funnel of each of
//! the first `max_campaign_metrics` registered campaigns. Their names are specified with every
//! other metric in `telemetry`; this module only renders them, in the Prometheus text format.

use crate::figures::{CampaignCounters, Figures};
use crate::telemetry::{
    CAMPAIGN_CERTIFIED, CAMPAIGN_CLICKS, CAMPAIGN_ENROLLED, CAMPAIGN_INFO,
    CAMPAIGN_METRICS_OMITTED, CAMPAIGN_PROGRESS, CAMPAIGN_STARTED, CAMPAIGN_TARGET,
    CAMPAIGN_UNIQUE_VISITORS, PROGRAMME_CERTIFIED, PROGRAMME_CHAPTER_COMPLETED, PROGRAMME_CLICKS,
    PROGRAMME_ENROLLED, PROGRAMME_PROGRESS, PROGRAMME_STARTED, PROGRAMME_TARGET,
    PROGRAMME_UNIQUE_VISITORS, READY,
};

/// Appends the scrape-time metrics to `out` (the recorder's rendering): the readiness gauge, and once ready the
/// programme's figures, and the figures of the first `max_campaign_metrics` registered
/// campaigns by id, in the Prometheus text format.
pub fn render_figures(
    out: &mut String,
    figures: &Figures,
    ready: bool,
    max_campaign_metrics: usize,
) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    gauge_family(
        out,
        READY,
        "1 when suivi has recovered its state and takes traffic, else 0.",
        [(None, u64::from(ready).to_string())],
    );
    // Before recovery the figures are still empty: exporting them would draw a false drop to
    // zero on every dashboard after each restart. A gap in the series is the truth.
    if !ready {
        return;
    }

    let totals = figures.totals();
    let programme = [
        (
            PROGRAMME_CLICKS,
            "The programme's distinct link clicks.",
            totals.clicks,
        ),
        (
            PROGRAMME_UNIQUE_VISITORS,
            "The programme's distinct visitors who clicked a link.",
            totals.unique_visitors,
        ),
        (
            PROGRAMME_ENROLLED,
            "The programme's distinct learners who enrolled.",
            totals.enrolled,
        ),
        (
            PROGRAMME_STARTED,
            "The programme's distinct learners who started the course.",
            totals.started,
        ),
        (
            PROGRAMME_CERTIFIED,
            "The programme's distinct learners who were certified.",
            totals.certified,
        ),
    ];
    for (name, help, value) in programme {
        gauge_family(out, name, help, [(None, value.to_string())]);
    }
    gauge_family(
        out,
        PROGRAMME_CHAPTER_COMPLETED,
        "The programme's distinct learners who completed each chapter.",
        totals
            .chapters_completed
            .iter()
            .enumerate()
            .map(|(index, learners)| {
                (
                    Some(format!("chapter=\"{}\"", index + 1)),
                    learners.to_string(),
                )
            }),
    );
    if let Some(target) = totals.target {
        gauge_family(
            out,
            PROGRAMME_TARGET,
            "How many people the programme means to certify.",
            [(None, target.to_string())],
        );
    }
    if let Some(progress) = totals.progress {
        gauge_family(
            out,
            PROGRAMME_PROGRESS,
            "The programme's certified learners over its target.",
            [(None, progress.to_string())],
        );
    }

    let mut registered: Vec<CampaignCounters> = figures
        .campaigns()
        .into_iter()
        .filter(|campaign| campaign.registered)
        .collect();
    let omitted = registered.len().saturating_sub(max_campaign_metrics);
    registered.truncate(max_campaign_metrics);
    let label = |campaign: &CampaignCounters| {
        format!("campaign=\"{}\"", escape_label_value(&campaign.campaign))
    };
    gauge_family(
        out,
        CAMPAIGN_INFO,
        "1 per exported campaign, with its partner's name.",
        registered.iter().map(|campaign| {
            (
                Some(format!(
                    "{},name=\"{}\"",
                    label(campaign),
                    escape_label_value(&campaign.name)
                )),
                "1".to_owned(),
            )
        }),
    );
    let per_campaign: [(&str, &str, CampaignValue); 7] = [
        (
            CAMPAIGN_CLICKS,
            "Distinct link clicks, by registered campaign.",
            |c| Some(c.clicks.to_string()),
        ),
        (
            CAMPAIGN_UNIQUE_VISITORS,
            "Distinct visitors who clicked the link, by registered campaign.",
            |c| Some(c.unique_visitors.to_string()),
        ),
        (
            CAMPAIGN_ENROLLED,
            "Distinct learners who enrolled, by registered campaign.",
            |c| Some(c.enrolled.to_string()),
        ),
        (
            CAMPAIGN_STARTED,
            "Distinct learners who started the course, by registered campaign.",
            |c| Some(c.started.to_string()),
        ),
        (
            CAMPAIGN_CERTIFIED,
            "Distinct learners who were certified, by registered campaign.",
            |c| Some(c.certified.to_string()),
        ),
        (
            CAMPAIGN_TARGET,
            "People the partner committed to train, by registered campaign with a target.",
            |c| c.target.map(|target| target.to_string()),
        ),
        (
            CAMPAIGN_PROGRESS,
            "Certified learners over the partner's target, by registered campaign with a target.",
            |c| c.progress.map(|progress| progress.to_string()),
        ),
    ];
    for (name, help, value) in per_campaign {
        gauge_family(
            out,
            name,
            help,
            registered
                .iter()
                .filter_map(|campaign| Some((Some(label(campaign)), value(campaign)?))),
        );
    }
    gauge_family(
        out,
        CAMPAIGN_METRICS_OMITTED,
        "Registered campaigns left out of the per-campaign series by max_campaign_metrics.",
        [(None, omitted.to_string())],
    );
}

/// One per-campaign figure, as the sample's text; `None` leaves the campaign out of the family.
type CampaignValue = fn(&CampaignCounters) -> Option<String>;

/// Writes one gauge family; a family without samples is left out whole, as Prometheus expects.
fn gauge_family(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Option<String>, String)>,
) {
    use std::fmt::Write as _;

    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return;
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = match labels {
            Some(labels) => writeln!(out, "{name}{{{labels}}} {value}"),
            None => writeln!(out, "{name} {value}"),
        };
    }
    out.push('\n');
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
