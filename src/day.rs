//! Calendar days in the programme's time zone: the unit of every timeline. A `Day` is two bytes
//! so that each learner can carry the day it first reached each stage; it never does IO and never
//! reads the clock.

use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use chrono::{Offset, TimeZone};
use chrono_tz::Tz;

/// One calendar day, from 2017-12-01 (before the earliest event suivi accepts, in any time zone)
/// to 2197-05-05.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(NonZeroU16);

/// The day before `Day`'s first day: `Day(n)` is `n` days after it.
const DAY_ZERO: NaiveDate = match NaiveDate::from_ymd_opt(2017, 11, 30) {
    Some(date) => date,
    None => panic!("2017-11-30 is a valid date"),
};

/// Days from 1970-01-01 to `DAY_ZERO`.
const DAY_ZERO_FROM_EPOCH: i64 = 17_500;
const SECONDS_PER_DAY: i64 = 86_400;

impl Day {
    /// The day of `date`, or `None` outside the range a `Day` can hold.
    pub fn from_date(date: NaiveDate) -> Option<Day> {
        let offset = date.signed_duration_since(DAY_ZERO).num_days();
        u16::try_from(offset)
            .ok()
            .and_then(NonZeroU16::new)
            .map(Day)
    }

    /// The calendar day on which `instant` falls in `time_zone`. Instants outside the range a
    /// `Day` holds are clamped to its ends; validation keeps events well inside it.
    pub fn of(instant: DateTime<Utc>, time_zone: Tz) -> Day {
        // Plain arithmetic on the local time's seconds: this runs for every event applied, and
        // going through calendar dates costs several times more.
        let offset = time_zone
            .offset_from_utc_datetime(&instant.naive_utc())
            .fix()
            .local_minus_utc();
        let local_days = (instant.timestamp() + i64::from(offset)).div_euclid(SECONDS_PER_DAY);
        let number = (local_days - DAY_ZERO_FROM_EPOCH).clamp(1, i64::from(u16::MAX));
        // The clamp keeps the number in 1..=u16::MAX.
        Day(u16::try_from(number)
            .ok()
            .and_then(NonZeroU16::new)
            .unwrap_or(NonZeroU16::MIN))
    }

    /// The day's number, as storage keeps it: never 0, so 0 can stand for "no day".
    pub fn number(self) -> u32 {
        u32::from(self.0.get())
    }

    /// The day numbered `number`, if it is one.
    pub fn from_number(number: u32) -> Option<Day> {
        u16::try_from(number)
            .ok()
            .and_then(NonZeroU16::new)
            .map(Day)
    }

    /// The calendar date of this day.
    pub fn date(self) -> NaiveDate {
        DAY_ZERO + chrono::Days::new(u64::from(self.0.get()))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.date().format("%Y-%m-%d"))
    }
}

impl fmt::Debug for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Day({self})")
    }
}

/// Why a text is not a day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a day: expected YYYY-MM-DD between 2017-12-01 and 2197-05-05")]
pub struct InvalidDay(pub String);

impl FromStr for Day {
    type Err = InvalidDay;

    fn from_str(text: &str) -> Result<Day, InvalidDay> {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(Day::from_date)
            .ok_or_else(|| InvalidDay(text.to_owned()))
    }
}

impl serde::Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Day, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for text in ["2017-12-01", "2018-01-01", "2020-10-05", "2197-05-05"] {
            let day: Day = text.parse().expect("valid day");
            assert_eq!(day.to_string(), text);
        }
        assert!("2017-11-30".parse::<Day>().is_err());
        assert!("2021-02-30".parse::<Day>().is_err());
        assert!("yesterday".parse::<Day>().is_err());
    }

    #[test]
    fn dates_an_instant_in_the_time_zone() {
        let instant: DateTime<Utc> = "2020-10-04T22:30:00Z".parse().expect("valid instant");
        assert_eq!(
            Day::of(instant, chrono_tz::Europe::Paris).to_string(),
            "2020-10-05"
        );
        assert_eq!(Day::of(instant, chrono_tz::UTC).to_string(), "2020-10-04");
        let first: DateTime<Utc> = "2018-01-01T00:00:00Z".parse().expect("valid instant");
        assert_eq!(
            Day::of(first, chrono_tz::America::Los_Angeles).to_string(),
            "2017-12-31"
        );
    }
}
