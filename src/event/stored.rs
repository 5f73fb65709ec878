//! Events as the journal stores them: validated and pseudonymised, so a stored event becomes an
//! [`Event`] again without any rule being re-applied. Only ids' fingerprints and keyed hashes are
//! written; never a learner or visitor id in clear.

use chrono::DateTime;

use super::{Action, Event, EventId, LearnerKey, Stage, VisitorKey};
use crate::proto::storage::{StoredAction, StoredEvent};

impl From<&Event> for StoredEvent {
    fn from(event: &Event) -> StoredEvent {
        let EventId([id0, id1, id2]) = event.id;
        let (action, key, chapter) = match event.action {
            Action::Click { visitor, .. } => {
                (StoredAction::Click, visitor.map(|VisitorKey(key)| key), 0)
            }
            Action::Progress {
                learner: LearnerKey(key),
                stage,
            } => match stage {
                Stage::Enrolled => (StoredAction::Enrolled, Some(key), 0),
                Stage::Started => (StoredAction::Started, Some(key), 0),
                Stage::ChapterCompleted(chapter) => (
                    StoredAction::ChapterCompleted,
                    Some(key),
                    u32::from(chapter),
                ),
                Stage::Certified => (StoredAction::Certified, Some(key), 0),
            },
            Action::Names {
                learner: LearnerKey(key),
            } => (StoredAction::Names, Some(key), 0),
        };
        let [key0, key1, key2] = key.unwrap_or_default();
        let click_learner = match event.action {
            Action::Click {
                learner: Some(LearnerKey(key)),
                ..
            } => Some(key),
            _ => None,
        };
        let [click_learner0, click_learner1, click_learner2] = click_learner.unwrap_or_default();
        StoredEvent {
            id0,
            id1,
            id2,
            content: event.content,
            id_prefix: event.id_prefix,
            campaign: event.campaign.clone(),
            action: action.into(),
            has_key: key.is_some(),
            key0,
            key1,
            key2,
            occurred_at_micros: event.occurred_at.timestamp_micros(),
            chapter,
            // Set by the writer for an event read from Kafka.
            source: 0,
            // Set by the writer for an event sent with a credential.
            sender: 0,
            has_click_learner: click_learner.is_some(),
            click_learner0,
            click_learner1,
            click_learner2,
        }
    }
}

/// Why a stored event cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored event is malformed: {0}")]
pub struct MalformedStoredEvent(&'static str);

impl TryFrom<StoredEvent> for Event {
    type Error = MalformedStoredEvent;

    fn try_from(stored: StoredEvent) -> Result<Event, MalformedStoredEvent> {
        let key = [stored.key0, stored.key1, stored.key2];
        let learner = stored
            .has_key
            .then_some(LearnerKey(key))
            .ok_or(MalformedStoredEvent("a learner event without a learner"));
        let action = match StoredAction::try_from(stored.action) {
            Ok(StoredAction::Click) => Action::Click {
                visitor: stored.has_key.then_some(VisitorKey(key)),
                learner: stored.has_click_learner.then_some(LearnerKey([
                    stored.click_learner0,
                    stored.click_learner1,
                    stored.click_learner2,
                ])),
            },
            Ok(StoredAction::Enrolled) => Action::Progress {
                learner: learner?,
                stage: Stage::Enrolled,
            },
            Ok(StoredAction::Started) => Action::Progress {
                learner: learner?,
                stage: Stage::Started,
            },
            Ok(StoredAction::ChapterCompleted) => Action::Progress {
                learner: learner?,
                stage: Stage::ChapterCompleted(
                    u8::try_from(stored.chapter)
                        .ok()
                        .filter(|chapter| (1..=super::MAX_CHAPTER_COUNT).contains(chapter))
                        .ok_or(MalformedStoredEvent("a chapter out of range"))?,
                ),
            },
            Ok(StoredAction::Certified) => Action::Progress {
                learner: learner?,
                stage: Stage::Certified,
            },
            Ok(StoredAction::Names) => Action::Names { learner: learner? },
            Ok(StoredAction::Unspecified) | Err(_) => {
                return Err(MalformedStoredEvent("an unknown action"));
            }
        };
        Ok(Event {
            id: EventId([stored.id0, stored.id1, stored.id2]),
            id_prefix: stored.id_prefix,
            content: stored.content,
            campaign: stored.campaign,
            action,
            occurred_at: DateTime::from_timestamp_micros(stored.occurred_at_micros)
                .ok_or(MalformedStoredEvent("a time out of range"))?,
        })
    }
}
