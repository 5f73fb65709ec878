//! The words and number formats of reports, in French (the programme's language, the default)
//! and English. Every piece of text a report shows a person comes from here; the machine names
//! (JSON fields, CSV metric keys) never change with the language.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::forecast::{Forecast, Outlook};
use crate::report::period::Period;

/// The language of a report: a setting (`report_lang`), defined with the others in `config`;
/// its words and formats are here.
pub use crate::config::Lang;

/// Every fixed text of a report, in one language.
#[derive(Debug)]
pub struct Words {
    pub lang_code: &'static str,
    pub report: &'static str,
    pub programme: &'static str,
    pub period: &'static str,
    pub previous_period: &'static str,
    pub change: &'static str,
    pub at_period_end: &'static str,
    pub programme_in_period: &'static str,
    pub programme_at_period_end: &'static str,
    pub clicks: &'static str,
    pub unique_visitors: &'static str,
    pub enrolled: &'static str,
    pub started: &'static str,
    pub certified: &'static str,
    pub completion_rate: &'static str,
    pub target: &'static str,
    pub progress: &'static str,
    pub no_target: &'static str,
    pub chapter: &'static str,
    pub figures: &'static str,
    pub cumulative_chart: &'static str,
    pub funnel_chart: &'static str,
    pub funnel_legend_programme: &'static str,
    pub share_of_enrolled: &'static str,
    pub funnel_as_of: &'static str,
    pub funnel_as_of_after: &'static str,
    pub no_data: &'static str,
    pub not_available: &'static str,
    pub notes: &'static str,
    pub note_dating: &'static str,
    pub note_snapshot_before: &'static str,
    pub note_snapshot_after: &'static str,
    pub note_no_snapshot: &'static str,
    pub note_programme: &'static str,
    pub note_visitors: &'static str,
    pub source_postgres: &'static str,
    pub source_files: &'static str,
    pub latest_snapshot: &'static str,
    pub generated: &'static str,
    pub half: [&'static str; 2],
    pub quarter: &'static str,
    pub forecast: &'static str,
    pub forecast_at_period_end: &'static str,
    pub forecast_reached_on: &'static str,
    pub forecast_around: &'static str,
    pub forecast_between: &'static str,
    pub forecast_and: &'static str,
    pub forecast_at_the_earliest: &'static str,
    pub forecast_not_at_current_pace: &'static str,
    pub pace: &'static str,
    pub per_week: &'static str,
    pub months: [&'static str; 12],
    pub short_months: [&'static str; 12],
}

const FRENCH: Words = Words {
    lang_code: "fr",
    report: "Rapport partenaire",
    programme: "Programme",
    period: "Période",
    previous_period: "Période précédente",
    change: "Évolution",
    at_period_end: "Cumul à la fin de la période",
    programme_in_period: "Programme : période",
    programme_at_period_end: "Programme : cumul",
    clicks: "Clics sur le lien",
    unique_visitors: "Visiteurs uniques",
    enrolled: "Inscrits",
    started: "Ont commencé le cours",
    certified: "Certifiés",
    completion_rate: "Taux de complétion (certifiés / inscrits)",
    target: "Objectif",
    progress: "Progression vers l’objectif",
    no_target: "pas d’objectif publié",
    chapter: "Chapitre",
    figures: "Les chiffres",
    cumulative_chart: "Inscriptions et certificats cumulés",
    funnel_chart: "Où les apprenants s’arrêtent : chapitres terminés",
    funnel_legend_programme: "part dans l’ensemble du programme",
    share_of_enrolled: "des inscrits",
    funnel_as_of: "Cumuls depuis le début, état au {at} (dernier instantané avant la fin de la période).",
    funnel_as_of_after: "Cumuls depuis le début, état au {at} : après la fin de la période, aucun instantané n’ayant été pris avant.",
    no_data: "Aucune donnée",
    not_available: "—",
    notes: "Méthode et sources",
    note_dating: "Les chiffres sont datés par le jour où les événements ont eu lieu (fuseau {tz}), y compris ceux arrivés après la période ; « période » compte ce qui est nouveau pendant la période, « cumul » tout ce qui précède sa fin.",
    note_snapshot_before: "Visiteurs uniques et chapitres terminés ne sont pas datés par jour : ce sont les cumuls de l’instantané du {at}, le dernier pris avant la fin de la période.",
    note_snapshot_after: "Visiteurs uniques et chapitres terminés ne sont pas datés par jour et aucun instantané n’a été pris avant la fin de la période : ce sont les cumuls de l’instantané du {at}, après la fin de la période.",
    note_no_snapshot: "Visiteurs uniques et chapitres terminés : aucun instantané ne les donne.",
    note_programme: "Le programme compte les apprenants distincts de toutes les campagnes (et de l’accès direct) : ce n’est pas la somme des campagnes.",
    note_visitors: "Les visiteurs uniques ne peuvent pas être comptés par période : seul le cumul est donné.",
    source_postgres: "Source : la base PostgreSQL de suivi",
    source_files: "Source : les fichiers d’instantanés de suivi",
    latest_snapshot: "dernier instantané",
    generated: "généré le",
    half: ["1re moitié", "2e moitié"],
    quarter: "T",
    forecast: "Prévision",
    forecast_at_period_end: "Prévision au rythme des quatre dernières semaines de la période",
    forecast_reached_on: "Objectif atteint le",
    forecast_around: "Vers le",
    forecast_between: "entre le",
    forecast_and: "et le",
    forecast_at_the_earliest: "au plus tôt le",
    forecast_not_at_current_pace: "Pas au rythme actuel",
    pace: "Rythme",
    per_week: "certifiés par semaine (4 dernières semaines)",
    months: [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
    short_months: [
        "janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.",
        "déc.",
    ],
};

const ENGLISH: Words = Words {
    lang_code: "en",
    report: "Partner report",
    programme: "Programme",
    period: "Period",
    previous_period: "Previous period",
    change: "Change",
    at_period_end: "Total at the end of the period",
    programme_in_period: "Programme: period",
    programme_at_period_end: "Programme: total",
    clicks: "Link clicks",
    unique_visitors: "Unique visitors",
    enrolled: "Enrolled",
    started: "Started the course",
    certified: "Certified",
    completion_rate: "Completion rate (certified / enrolled)",
    target: "Target",
    progress: "Progress towards the target",
    no_target: "no published target",
    chapter: "Chapter",
    figures: "The figures",
    cumulative_chart: "Cumulative enrolments and certificates",
    funnel_chart: "Where learners stop: chapters completed",
    funnel_legend_programme: "share across the whole programme",
    share_of_enrolled: "of enrolled",
    funnel_as_of: "Totals since the start, as of {at} (the last snapshot before the end of the period).",
    funnel_as_of_after: "Totals since the start, as of {at}: after the end of the period, as no snapshot was taken before it.",
    no_data: "No data",
    not_available: "—",
    notes: "Method and sources",
    note_dating: "Figures are dated by the day the events happened ({tz} time), including those that arrived after the period; “period” counts what was new during the period, “total” everything before its end.",
    note_snapshot_before: "Unique visitors and chapters completed are not dated by day: they are the totals of the snapshot of {at}, the last one taken before the end of the period.",
    note_snapshot_after: "Unique visitors and chapters completed are not dated by day and no snapshot was taken before the end of the period: they are the totals of the snapshot of {at}, after the end of the period.",
    note_no_snapshot: "Unique visitors and chapters completed: no snapshot gives them.",
    note_programme: "The programme counts distinct learners over every campaign (and direct access): it is not the sum of the campaigns.",
    note_visitors: "Unique visitors cannot be counted per period: only the total is given.",
    source_postgres: "Source: suivi’s PostgreSQL database",
    source_files: "Source: suivi’s snapshot files",
    latest_snapshot: "latest snapshot",
    generated: "generated",
    half: ["first half", "second half"],
    quarter: "Q",
    forecast: "Forecast",
    forecast_at_period_end: "Forecast at the pace of the period's last four weeks",
    forecast_reached_on: "Target reached on",
    forecast_around: "Around",
    forecast_between: "between",
    forecast_and: "and",
    forecast_at_the_earliest: "at the earliest",
    forecast_not_at_current_pace: "Not at the current pace",
    pace: "Pace",
    per_week: "certified per week (last 4 weeks)",
    months: [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    short_months: [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ],
};

impl Lang {
    /// Its fixed texts.
    pub fn words(self) -> &'static Words {
        match self {
            Lang::Fr => &FRENCH,
            Lang::En => &ENGLISH,
        }
    }

    /// A count with thousands grouped: `65 000` (narrow no-break spaces) or `65,000`.
    pub fn number(self, value: u64) -> String {
        let digits = value.to_string();
        let separator = match self {
            Lang::Fr => "\u{202f}",
            Lang::En => ",",
        };
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index) % 3 == 0 {
                grouped.push_str(separator);
            }
            grouped.push(digit);
        }
        grouped
    }

    /// A signed change: `+1 200`, `−300`, `0`.
    pub fn signed(self, value: i64) -> String {
        let magnitude = self.number(value.unsigned_abs());
        match value {
            0 => magnitude,
            v if v > 0 => format!("+{magnitude}"),
            _ => format!("\u{2212}{magnitude}"),
        }
    }

    /// A ratio as a percentage with one decimal: `86,2 %` or `86.2%`.
    pub fn percent(self, ratio: f64) -> String {
        let text = format!("{:.1}", ratio * 100.0);
        match self {
            Lang::Fr => format!("{}\u{202f}%", text.replace('.', ",")),
            Lang::En => format!("{text}%"),
        }
    }

    /// `label : value` (French puts a no-break space before the colon) or `label: value`.
    pub fn label_value(self, label: &str, value: &str) -> String {
        match self {
            Lang::Fr => format!("{label}\u{a0}: {value}"),
            Lang::En => format!("{label}: {value}"),
        }
    }

    /// A date in words: `5 octobre 2020`, `5 October 2020`.
    pub fn date(self, date: NaiveDate) -> String {
        let month = self.words().months[date.month0() as usize];
        let day = match (self, date.day()) {
            (Lang::Fr, 1) => "1er".to_owned(),
            (_, day) => day.to_string(),
        };
        format!("{day} {month} {}", date.year())
    }

    /// A month on a chart axis: `oct. 2020`, `Oct 2020`.
    pub fn short_month(self, date: NaiveDate) -> String {
        format!(
            "{} {}",
            self.words().short_months[date.month0() as usize],
            date.year()
        )
    }

    /// An instant in `time_zone`, to the minute: `25 janvier 2021 à 18:03` or
    /// `25 January 2021, 18:03`.
    pub fn instant(self, instant: DateTime<Utc>, time_zone: Tz) -> String {
        let local = instant.with_timezone(&time_zone);
        let time = local.format("%H:%M");
        match self {
            Lang::Fr => format!("{} à {time}", self.date(local.date_naive())),
            Lang::En => format!("{}, {time}", self.date(local.date_naive())),
        }
    }

    /// A period for a title: `T4 2020, 2e moitié (16 novembre – 31 décembre 2020)`, or the range
    /// alone.
    pub fn period(self, period: &Period) -> String {
        let range = format!("{} – {}", self.date(period.from), self.date(period.to));
        match period.half_quarter() {
            Some(half_quarter) => {
                let words = self.words();
                let quarter = format!(
                    "{}{} {}",
                    words.quarter, half_quarter.quarter, half_quarter.year
                );
                let half = words.half[usize::from(half_quarter.half.saturating_sub(1)).min(1)];
                format!("{quarter}, {half} ({range})")
            }
            None => range,
        }
    }
}

impl Lang {
    /// A forecast in one short sentence: `Vers le 10 février 2021 (entre le 26 janvier 2021 et
    /// le 9 juin 2021)`; without a target, that there is none.
    pub fn forecast(self, forecast: Option<&Forecast>) -> String {
        let words = self.words();
        let Some(forecast) = forecast else {
            return words.no_target.to_owned();
        };
        match forecast.outlook {
            Outlook::Reached { on } => format!("{} {}", words.forecast_reached_on, self.date(on)),
            Outlook::Expected {
                date,
                earliest,
                latest: Some(latest),
            } => format!(
                "{} {} ({} {} {} {})",
                words.forecast_around,
                self.date(date),
                words.forecast_between,
                self.date(earliest),
                words.forecast_and,
                self.date(latest)
            ),
            Outlook::Expected {
                date,
                earliest,
                latest: None,
            } => format!(
                "{} {} ({} {})",
                words.forecast_around,
                self.date(date),
                words.forecast_at_the_earliest,
                self.date(earliest)
            ),
            Outlook::NotAtCurrentPace => words.forecast_not_at_current_pace.to_owned(),
        }
    }

    /// The pace behind a forecast: `Rythme : 1 234 certifiés par semaine (4 dernières semaines)`.
    pub fn pace(self, forecast: &Forecast) -> String {
        let words = self.words();
        // A pace is a count per week, shown rounded to a whole learner.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // Rounded, ≥ 0.
        let per_week = forecast.pace_per_week.round().max(0.0) as u64;
        self.label_value(
            words.pace,
            &format!("{} {}", self.number(per_week), words.per_week),
        )
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.words().lang_code)
    }
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(text: &str) -> Result<Lang, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "fr" => Ok(Lang::Fr),
            "en" => Ok(Lang::En),
            other => Err(format!("{other:?} is not a report language: fr or en")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_dates_in_both_languages() {
        assert_eq!(Lang::Fr.number(65_000), "65\u{202f}000");
        assert_eq!(Lang::En.number(1_234_567), "1,234,567");
        assert_eq!(Lang::En.number(999), "999");
        assert_eq!(Lang::Fr.signed(-1200), "\u{2212}1\u{202f}200");
        assert_eq!(Lang::En.signed(42), "+42");
        assert_eq!(Lang::Fr.percent(0.861_538), "86,2\u{202f}%");
        assert_eq!(Lang::En.percent(0.56), "56.0%");
        let date = NaiveDate::from_ymd_opt(2020, 10, 1).expect("a date");
        assert_eq!(Lang::Fr.date(date), "1er octobre 2020");
        assert_eq!(Lang::En.date(date), "1 October 2020");
        let period = Period::parse("2020-Q4-2").expect("a period");
        assert_eq!(
            Lang::Fr.period(&period),
            "T4 2020, 2e moitié (16 novembre 2020 – 31 décembre 2020)"
        );
        assert_eq!(
            Lang::En.period(&period),
            "Q4 2020, second half (16 November 2020 – 31 December 2020)"
        );
        assert_eq!("EN".parse::<Lang>(), Ok(Lang::En));
        assert!("de".parse::<Lang>().is_err());
    }
}
