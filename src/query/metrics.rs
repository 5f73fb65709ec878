//! The business gauges of `/metrics`, written at scrape time from the read model (`Figures`) of
//! the service scraped: readiness, the programme's funnel and target, and the funnel of each of
//! the first `max_campaign_metrics` registered campaigns. Their names are specified with every
//! other metric, with their help, in `telemetry::spec`; this module only renders them, in the
//! Prometheus text format.

use crate::figures::{CampaignCounters, Figures};
use crate::telemetry::{
    self, CAMPAIGN_CERTIFIED, CAMPAIGN_CLICKS, CAMPAIGN_ENROLLED, CAMPAIGN_INFO,
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
    gauge_family(out, READY, [(None, u64::from(ready).to_string())]);
    // Before recovery the figures are still empty: exporting them would draw a false drop to
    // zero on every dashboard after each restart. A gap in the series is the truth.
    if !ready {
        return;
    }

    let totals = figures.totals();
    let programme = [
        (PROGRAMME_CLICKS, totals.clicks),
        (PROGRAMME_UNIQUE_VISITORS, totals.unique_visitors),
        (PROGRAMME_ENROLLED, totals.enrolled),
        (PROGRAMME_STARTED, totals.started),
        (PROGRAMME_CERTIFIED, totals.certified),
    ];
    for (name, value) in programme {
        gauge_family(out, name, [(None, value.to_string())]);
    }
    gauge_family(
        out,
        PROGRAMME_CHAPTER_COMPLETED,
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
        gauge_family(out, PROGRAMME_TARGET, [(None, target.to_string())]);
    }
    if let Some(progress) = totals.progress {
        gauge_family(out, PROGRAMME_PROGRESS, [(None, progress.to_string())]);
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
    let per_campaign: [(&str, CampaignValue); 7] = [
        (CAMPAIGN_CLICKS, |c| Some(c.clicks.to_string())),
        (CAMPAIGN_UNIQUE_VISITORS, |c| {
            Some(c.unique_visitors.to_string())
        }),
        (CAMPAIGN_ENROLLED, |c| Some(c.enrolled.to_string())),
        (CAMPAIGN_STARTED, |c| Some(c.started.to_string())),
        (CAMPAIGN_CERTIFIED, |c| Some(c.certified.to_string())),
        (CAMPAIGN_TARGET, |c| {
            c.target.map(|target| target.to_string())
        }),
        (CAMPAIGN_PROGRESS, |c| {
            c.progress.map(|progress| progress.to_string())
        }),
    ];
    for (name, value) in per_campaign {
        gauge_family(
            out,
            name,
            registered
                .iter()
                .filter_map(|campaign| Some((Some(label(campaign)), value(campaign)?))),
        );
    }
    gauge_family(out, CAMPAIGN_METRICS_OMITTED, [(None, omitted.to_string())]);
}

/// One per-campaign figure, as the sample's text; `None` leaves the campaign out of the family.
type CampaignValue = fn(&CampaignCounters) -> Option<String>;

/// Writes one gauge family, with its help from the specification (`telemetry::spec`); a family
/// without samples is left out whole, as Prometheus expects.
fn gauge_family(
    out: &mut String,
    name: &str,
    samples: impl IntoIterator<Item = (Option<String>, String)>,
) {
    use std::fmt::Write as _;

    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return;
    }
    let help = telemetry::help(name);
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
