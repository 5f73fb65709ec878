//! Learning-record standards (xAPI, Caliper) mapped onto suivi's events: an LMS points its
//! LRS endpoint or Caliper sensor at suivi and its statements are counted as the learner events
//! they stand for. [`Mapping`] is the configurable table both standards share (`[xapi]` in the
//! settings file): which activities are the course, which are chapters and their numbers, and how
//! LMS hosts are named as sources.

pub mod caliper;
pub mod xapi;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The activity types that make an activity the course when `course` lists no activity id.
pub const COURSE_ACTIVITY_TYPES: [&str; 3] = [
    "http://adlnet.gov/expapi/activities/course",
    "http://id.tincanapi.com/activitytype/lms/course",
    "https://w3id.org/xapi/cmi5/activitytype/course",
];

/// The context extension by which a statement names its campaign (the UTM campaign of the
/// learner's tracking link): `"context": {"extensions": {CAMPAIGN_EXTENSION: "gendarmerie"}}`.
/// A statement without it counts under the credential's campaign when the credential names
/// exactly one, else under its learner's campaign (attribution).
pub const CAMPAIGN_EXTENSION: &str = "urn:suivi:campaign";

/// How statements map onto suivi's events (`[xapi]` in the settings file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mapping {
    /// The course's activity ids (IRIs); empty: any activity typed as a course
    /// ([`COURSE_ACTIVITY_TYPES`]).
    pub course: Vec<String>,
    /// Chapter activity ids (IRIs) and their numbers, from 1 to `chapter_count`.
    pub chapters: BTreeMap<String, u8>,
    /// Source names by LMS host (the host of `actor.account.homePage`): a statement from a host
    /// not listed here has the host itself as its source.
    pub sources: BTreeMap<String, String>,
}

impl Mapping {
    /// Checks the mapping against the course's `chapter_count`.
    pub fn check(&self, chapter_count: u8) -> Result<(), String> {
        for (activity, chapter) in &self.chapters {
            if !(1..=chapter_count).contains(chapter) {
                return Err(format!(
                    "xapi.chapters: {activity:?} is chapter {chapter}, but the course has chapters 1 to {chapter_count}"
                ));
            }
        }
        Ok(())
    }
}

impl Mapping {
    /// Whether the activity `id` of type `kind` is the course.
    pub fn is_course(&self, id: &str, kind: Option<&str>) -> bool {
        if self.course.is_empty() {
            kind.is_some_and(|kind| COURSE_ACTIVITY_TYPES.contains(&kind))
        } else {
            self.course.iter().any(|course| course == id)
        }
    }
}

/// The Caliper event `extensions` key naming the event's campaign (a string: the tracking link's
/// UTM campaign), for sensors that can add it; an event without it counts under the credential's
/// only campaign, else under its learner's campaign. The same key as xAPI's.
pub const CALIPER_CAMPAIGN_EXTENSION: &str = CAMPAIGN_EXTENSION;

/// The Caliper `extensions` key (of a GradeEvent's generated Score, or of the event) saying
/// whether a course grade passed (`true` or `false`), over `scoreGiven`/`maxScore`.
pub const CALIPER_PASSED_EXTENSION: &str = "urn:suivi:passed";
