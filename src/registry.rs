//! The campaign registry: the partners of the programme, one tracking campaign each, with their
//! names and the targets they committed to. It is read from a TOML file shaped like
//! `config/campaigns.toml` (a copy of the programme's published list, embedded as the default).
//! Registered campaigns are shown with zero counters before their first event; events for
//! campaigns not in the registry are still counted, and shown as unregistered.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use serde::Deserialize;

use crate::event::{DIRECT_CAMPAIGN, TOTALS_CAMPAIGN};

/// The registry shipped with suivi, used when no `campaigns` file is configured.
pub const DEFAULT_REGISTRY: &str = include_str!("../config/campaigns.toml");

/// The programme and its partners' campaigns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    #[serde(default)]
    pub programme: Programme,
    #[serde(default, rename = "campaign")]
    pub campaigns: Vec<Campaign>,
}

/// The programme as a whole.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Programme {
    #[serde(default)]
    pub name: String,
    pub country_population: Option<u64>,
    /// How many people the programme means to train; the totals' progress is measured by it.
    pub target: Option<u64>,
    /// Published programme figures, which `suivi simulate` reproduces.
    pub published_started: Option<u64>,
    pub published_certified: Option<u64>,
}

/// One partner's tracking campaign.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// The UTM campaign, normalised: trimmed, lower-case.
    pub id: String,
    pub name: String,
    pub kind: Option<String>,
    /// How many people the partner committed to train.
    pub target: Option<u64>,
    pub launched: Option<NaiveDate>,
    /// The platform its learners use, when it is not the course platform.
    pub platform: Option<String>,
    pub published_enrolled: Option<u64>,
    pub published_certified: Option<u64>,
}

impl Registry {
    /// Reads the registry at `path`, or the embedded default.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Registry> {
        match path {
            None => Registry::parse(DEFAULT_REGISTRY).context("embedded campaign registry"),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read campaign registry {}", path.display()))?;
                Registry::parse(&text)
                    .with_context(|| format!("invalid campaign registry {}", path.display()))
            }
        }
    }

    /// Parses and checks a registry.
    pub fn parse(text: &str) -> anyhow::Result<Registry> {
        let registry: Registry = toml::from_str(text)?;
        let mut ids = HashSet::new();
        for campaign in &registry.campaigns {
            let id = campaign.id.as_str();
            if id.is_empty() || id.len() > 64 || id != id.trim().to_lowercase() {
                bail!("campaign id {id:?} must be 1 to 64 bytes, trimmed and lower-case");
            }
            if id == TOTALS_CAMPAIGN || id == DIRECT_CAMPAIGN {
                bail!("campaign id {id:?} is reserved");
            }
            if !ids.insert(id) {
                bail!("campaign id {id:?} is registered twice");
            }
        }
        Ok(registry)
    }

    /// The campaign registered as `id`.
    pub fn campaign(&self, id: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|campaign| campaign.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_registry_holds_the_programme() {
        let registry = Registry::load(None).expect("embedded registry parses");
        assert_eq!(registry.campaigns.len(), 78);
        assert_eq!(registry.programme.target, Some(670_000));
        let gendarmerie = registry
            .campaign("gendarmerie")
            .expect("gendarmerie is registered");
        assert_eq!(gendarmerie.target, Some(100_000));
        assert_eq!(gendarmerie.published_certified, Some(56_000));
    }

    #[test]
    fn refuses_bad_ids() {
        for (text, expected) in [
            ("[[campaign]]\nid = \"A\"\nname = \"a\"", "lower-case"),
            ("[[campaign]]\nid = \"*\"\nname = \"a\"", "reserved"),
            (
                "[[campaign]]\nid = \"a\"\nname = \"a\"\n[[campaign]]\nid = \"a\"\nname = \"b\"",
                "twice",
            ),
            (
                "[[campaign]]\nid = \"a\"\nname = \"a\"\ntagret = 3",
                "unknown field",
            ),
        ] {
            let error = format!("{:#}", Registry::parse(text).expect_err(text));
            assert!(error.contains(expected), "{error}");
        }
    }
}
