//! The pages' own words, in French (the default) and English, and the one format the report's
//! `Lang` does not have (an instant to the second). Numbers, percents, dates and forecasts come
//! from `Lang`, as in the reports, so a page and a report never disagree.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::report::Lang;

/// Every fixed text of the pages, in one language.
#[derive(Debug)]
pub struct PageWords {
    pub live_page: &'static str,
    pub at_a_glance: &'static str,
    pub skip_to_content: &'static str,
    pub other_language: &'static str,
    pub other_language_name: &'static str,
    pub figures_as_of: &'static str,
    pub live_on: &'static str,
    pub live_off: &'static str,
    pub live_static: &'static str,
    pub live_ended: &'static str,
    pub clicks: &'static str,
    pub funnel: &'static str,
    pub stage: &'static str,
    pub learners: &'static str,
    pub of_previous_step: &'static str,
    pub of_enrolled: &'static str,
    pub programme_of_enrolled: &'static str,
    pub where_they_stop: &'static str,
    pub largest_drop: &'static str,
    pub no_drop: &'static str,
    pub this_period: &'static str,
    pub previous_half_quarter: &'static str,
    pub forecast: &'static str,
    pub forecast_method: &'static str,
    pub reports: &'static str,
    pub reports_intro: &'static str,
    pub no_reports: &'static str,
    pub partners: &'static str,
    pub partner: &'static str,
    pub sort_by: &'static str,
    pub ascending: &'static str,
    pub descending: &'static str,
    pub programme_totals: &'static str,
    pub no_partner: &'static str,
    pub not_found: &'static str,
    pub not_found_detail: &'static str,
    pub unauthenticated: &'static str,
    pub unauthenticated_detail: &'static str,
    pub forbidden: &'static str,
    pub link_invalid: &'static str,
    pub link_expired: &'static str,
    pub not_ready: &'static str,
    pub not_ready_detail: &'static str,
    pub back_to_programme: &'static str,
}

const FRENCH: PageWords = PageWords {
    live_page: "Suivi en direct",
    at_a_glance: "Le programme d’un coup d’œil",
    skip_to_content: "Aller au contenu",
    other_language: "English",
    other_language_name: "en",
    figures_as_of: "Chiffres au",
    live_on: "● En direct",
    live_off: "Connexion perdue, nouvelle tentative…",
    live_static: "Rechargez la page pour des chiffres à jour.",
    live_ended: "Cet accès a pris fin : rechargez la page.",
    clicks: "Clics sur le lien",
    funnel: "Le parcours des apprenants",
    stage: "Étape",
    learners: "Apprenants",
    of_previous_step: "de l’étape précédente",
    of_enrolled: "des inscrits",
    programme_of_enrolled: "programme, des inscrits",
    where_they_stop: "Où les apprenants s’arrêtent",
    largest_drop: "Plus forte perte",
    no_drop: "Pas encore assez d’apprenants pour le dire.",
    this_period: "Cette période comparée à la précédente",
    previous_half_quarter: "Demi-trimestre précédent",
    forecast: "Prévision",
    forecast_method: "La prévision prolonge le rythme des quatre dernières semaines complètes \
        (certificats par semaine) jusqu’à l’objectif ; la fourchette vient de la plus rapide et de \
        la plus lente de ces quatre semaines. Au-delà d’un an : « pas au rythme actuel ».",
    reports: "Rapports des périodes passées",
    reports_intro: "Les rapports de chaque demi-trimestre, à télécharger :",
    no_reports: "Aucune période passée avec des chiffres.",
    partners: "Les partenaires",
    partner: "Partenaire",
    sort_by: "Trier par",
    ascending: "croissant",
    descending: "décroissant",
    programme_totals: "Tout le programme",
    no_partner: "Aucun partenaire visible avec cet accès.",
    not_found: "Page introuvable",
    not_found_detail: "Aucune campagne de ce nom n’est visible avec cet accès.",
    unauthenticated: "Accès refusé",
    unauthenticated_detail: "Cette page demande un accès : ouvrez le lien qui vous a été \
        envoyé, ou donnez votre jeton suivi comme mot de passe.",
    forbidden: "Cet accès ne permet pas de voir ces chiffres.",
    link_invalid: "Ce lien n’est pas valide : il a été modifié, ou retiré quand la clé des liens a \
        été changée. Demandez-en un nouveau au programme.",
    link_expired: "Ce lien a expiré le {date} : demandez-en un nouveau au programme.",
    not_ready: "suivi démarre",
    not_ready_detail: "Les chiffres sont en cours de reconstruction ; réessayez dans un instant.",
    back_to_programme: "Le programme",
};

const ENGLISH: PageWords = PageWords {
    live_page: "Live figures",
    at_a_glance: "The programme at a glance",
    skip_to_content: "Skip to content",
    other_language: "Français",
    other_language_name: "fr",
    figures_as_of: "Figures as of",
    live_on: "● Live",
    live_off: "Connection lost, retrying…",
    live_static: "Reload the page for current figures.",
    live_ended: "This access has ended: reload the page.",
    clicks: "Link clicks",
    funnel: "The learners’ funnel",
    stage: "Stage",
    learners: "Learners",
    of_previous_step: "of the previous step",
    of_enrolled: "of enrolled",
    programme_of_enrolled: "programme, of enrolled",
    where_they_stop: "Where learners stop",
    largest_drop: "Largest drop",
    no_drop: "Not enough learners yet to tell.",
    this_period: "This period against the previous one",
    previous_half_quarter: "Previous half-quarter",
    forecast: "Forecast",
    forecast_method: "The forecast extends the pace of the last four complete weeks (certificates \
        per week) to the target; the range comes from the fastest and the slowest of those four \
        weeks. Beyond a year: \u{201c}not at the current pace\u{201d}.",
    reports: "Reports of past periods",
    reports_intro: "The half-quarterly reports, to download:",
    no_reports: "No past period with figures.",
    partners: "Partners",
    partner: "Partner",
    sort_by: "Sort by",
    ascending: "ascending",
    descending: "descending",
    programme_totals: "Whole programme",
    no_partner: "No partner is visible with this access.",
    not_found: "Page not found",
    not_found_detail: "No campaign of that name is visible with this access.",
    unauthenticated: "Access refused",
    unauthenticated_detail: "This page needs access: open the link you were sent, or give your \
        suivi token as the password.",
    forbidden: "This access does not show these figures.",
    link_invalid: "This link is not valid: it was altered, or withdrawn when the link key was \
        replaced. Ask the programme for a new one.",
    link_expired: "This link expired on {date}: ask the programme for a new one.",
    not_ready: "suivi is starting",
    not_ready_detail: "The figures are being rebuilt; try again in a moment.",
    back_to_programme: "The programme",
};

/// The pages' words in `lang`.
pub fn words(lang: Lang) -> &'static PageWords {
    match lang {
        Lang::Fr => &FRENCH,
        Lang::En => &ENGLISH,
    }
}

/// An instant in `time_zone`, to the second: `30 novembre 2026 à 23:41:07`.
pub fn instant_seconds(lang: Lang, instant: DateTime<Utc>, time_zone: Tz) -> String {
    let local = instant.with_timezone(&time_zone);
    let time = local.format("%H:%M:%S");
    match lang {
        Lang::Fr => format!("{} à {time}", lang.date(local.date_naive())),
        Lang::En => format!("{}, {time}", lang.date(local.date_naive())),
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::forecast::{Forecast, Outlook};

    #[test]
    fn forecasts_and_instants_read_as_sentences_in_both_languages() {
        let date = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a date");
        let forecast = Forecast {
            as_of: date("2021-01-01"),
            pace_per_week: 1_234.4,
            outlook: Outlook::Expected {
                date: date("2021-02-10"),
                earliest: date("2021-01-26"),
                latest: None,
            },
        };
        assert_eq!(
            Lang::Fr.forecast(Some(&forecast)),
            "Vers le 10 février 2021 (au plus tôt le 26 janvier 2021)"
        );
        assert_eq!(
            Lang::Fr.pace(&forecast),
            "Rythme\u{a0}: 1\u{202f}234 certifiés par semaine (4 dernières semaines)"
        );
        assert_eq!(Lang::En.forecast(None), "no published target");
        let instant: DateTime<Utc> = "2026-11-30T22:41:07Z".parse().expect("an instant");
        assert_eq!(
            instant_seconds(Lang::Fr, instant, chrono_tz::Europe::Paris),
            "30 novembre 2026 à 23:41:07"
        );
    }
}
