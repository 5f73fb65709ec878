//! Report periods: a range of calendar days (in suivi's time zone), named or not. The programme
//! reports twice a quarter, on **half-quarters**: `YYYY-Qn-1` is the quarter's first month and
//! the first 15 days of its second month, `YYYY-Qn-2` the rest of the quarter. So `2021-Q1-1` is
//! 1 January – 15 February, `2021-Q1-2` 16 February – 31 March, `2020-Q4-1` 1 October –
//! 15 November, `2020-Q4-2` 16 November – 31 December. A period's previous period is the
//! half-quarter before, or, for a plain range, the range of as many days just before it. This
//! file does no IO and never reads the clock.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::day::Day;

/// The days a report covers, both ends included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    /// The half-quarter's name (`2021-Q1-1`); `None` for a plain date range.
    pub name: Option<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// One half of a quarter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HalfQuarter {
    pub year: i32,
    /// 1 to 4.
    pub quarter: u8,
    /// 1 or 2.
    pub half: u8,
}

impl HalfQuarter {
    /// The half-quarter `date` falls in.
    pub fn containing(date: NaiveDate) -> HalfQuarter {
        // A month is 1 to 12, so the quarter is 1 to 4.
        let quarter = (date.month0() / 3 + 1) as u8;
        let second_month = date.month0() % 3 == 1;
        let half = if date.month0() % 3 == 0 || (second_month && date.day() <= 15) {
            1
        } else {
            2
        };
        HalfQuarter {
            year: date.year(),
            quarter,
            half,
        }
    }

    /// Its first day.
    pub fn first_day(self) -> NaiveDate {
        let first_month = 3 * u32::from(self.quarter) - 2;
        let (month, day) = if self.half == 1 {
            (first_month, 1)
        } else {
            (first_month + 1, 16)
        };
        date(self.year, month, day)
    }

    /// Its last day.
    pub fn last_day(self) -> NaiveDate {
        self.next().first_day() - Days::new(1)
    }

    /// The half-quarter just before.
    pub fn previous(self) -> HalfQuarter {
        match (self.quarter, self.half) {
            (_, 2) => HalfQuarter { half: 1, ..self },
            (1, _) => HalfQuarter {
                year: self.year - 1,
                quarter: 4,
                half: 2,
            },
            (quarter, _) => HalfQuarter {
                quarter: quarter - 1,
                half: 2,
                ..self
            },
        }
    }

    /// The half-quarter just after.
    pub fn next(self) -> HalfQuarter {
        match (self.quarter, self.half) {
            (_, 1) => HalfQuarter { half: 2, ..self },
            (4, _) => HalfQuarter {
                year: self.year + 1,
                quarter: 1,
                half: 1,
            },
            (quarter, _) => HalfQuarter {
                quarter: quarter + 1,
                half: 1,
                ..self
            },
        }
    }

    pub fn period(self) -> Period {
        Period {
            name: Some(self.to_string()),
            from: self.first_day(),
            to: self.last_day(),
        }
    }
}

impl fmt::Display for HalfQuarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-Q{}-{}", self.year, self.quarter, self.half)
    }
}

impl FromStr for HalfQuarter {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<HalfQuarter> {
        let invalid = || {
            anyhow::anyhow!(
                "{text:?} is not a half-quarter: expected YYYY-Qn-h, e.g. 2021-Q1-1 (1 January to 15 February) or 2021-Q1-2 (16 February to 31 March)"
            )
        };
        let mut parts = text.trim().split('-');
        let (Some(year), Some(quarter), Some(half), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let year: i32 = year.parse().map_err(|_| invalid())?;
        let quarter: u8 = quarter
            .strip_prefix(['Q', 'q'])
            .and_then(|quarter| quarter.parse().ok())
            .filter(|quarter| (1..=4).contains(quarter))
            .ok_or_else(invalid)?;
        let half: u8 = half
            .parse()
            .ok()
            .filter(|half| (1..=2).contains(half))
            .ok_or_else(invalid)?;
        if !(2018..=2190).contains(&year) {
            return Err(invalid());
        }
        Ok(HalfQuarter {
            year,
            quarter,
            half,
        })
    }
}

impl Period {
    /// The days from `from` to `to`, both included.
    pub fn range(from: NaiveDate, to: NaiveDate) -> anyhow::Result<Period> {
        if from > to {
            bail!("the period starts ({from}) after it ends ({to})");
        }
        for date in [from, to] {
            Day::from_date(date).with_context(|| {
                format!("{date} is outside the days suivi counts (2017-12-01 to 2197-05-05)")
            })?;
        }
        Ok(Period {
            name: None,
            from,
            to,
        })
    }

    /// A half-quarter (`2021-Q1-1`) or a range (`2020-10-05..2021-01-25`).
    pub fn parse(text: &str) -> anyhow::Result<Period> {
        let text = text.trim();
        if let Some((from, to)) = text.split_once("..") {
            return Period::range(parse_date(from)?, parse_date(to)?);
        }
        Ok(text.parse::<HalfQuarter>()?.period())
    }

    /// The period a report compares this one with: the half-quarter before, or as many days
    /// just before.
    pub fn previous(&self) -> Period {
        if let Some(half_quarter) = self
            .name
            .as_deref()
            .and_then(|name| name.parse::<HalfQuarter>().ok())
        {
            return half_quarter.previous().period();
        }
        let days = self.num_days();
        Period {
            name: None,
            from: self.from - Days::new(days),
            to: self.from - Days::new(1),
        }
    }

    /// How many days it covers.
    pub fn num_days(&self) -> u64 {
        // `from <= to` for every period built here.
        u64::try_from((self.to - self.from).num_days() + 1).unwrap_or(1)
    }

    /// The half-quarter it is, if it is one.
    pub fn half_quarter(&self) -> Option<HalfQuarter> {
        self.name.as_deref()?.parse().ok()
    }

    /// The first instant after the period, in `time_zone`: what happened before it is in.
    pub fn end_instant(&self, time_zone: Tz) -> DateTime<Utc> {
        start_of_day(self.to + Days::new(1), time_zone)
    }

    /// Its first and last days as [`Day`]s (clamped to the days suivi can hold).
    pub fn days(&self) -> (Day, Day) {
        let clamp = |date: NaiveDate| {
            Day::from_date(date).unwrap_or_else(|| {
                Day::of(date.and_time(NaiveTime::MIN).and_utc(), chrono_tz::Tz::UTC)
            })
        };
        (clamp(self.from), clamp(self.to))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({}..{})", self.from, self.to),
            None => write!(f, "{}..{}", self.from, self.to),
        }
    }
}

/// The last half-quarter that has ended by `today` (the one before the half-quarter of today).
pub fn last_completed(today: NaiveDate) -> HalfQuarter {
    HalfQuarter::containing(today).previous()
}

/// The instant the half-quarter holding `now` (in `time_zone`) ends.
pub fn next_boundary(now: DateTime<Utc>, time_zone: Tz) -> DateTime<Utc> {
    let today = now.with_timezone(&time_zone).date_naive();
    start_of_day(HalfQuarter::containing(today).next().first_day(), time_zone)
}

/// Midnight at the start of `date` in `time_zone` (or the first instant of the day, where a
/// clock change skips midnight).
pub fn start_of_day(date: NaiveDate, time_zone: Tz) -> DateTime<Utc> {
    let mut time = NaiveTime::MIN;
    for _ in 0..4 {
        if let Some(start) = time_zone
            .from_local_datetime(&date.and_time(time))
            .earliest()
        {
            return start.with_timezone(&Utc);
        }
        time += chrono::Duration::minutes(30);
    }
    date.and_time(NaiveTime::MIN).and_utc()
}

/// A YYYY-MM-DD date.
pub fn parse_date(text: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .with_context(|| format!("{:?} is not a date: expected YYYY-MM-DD", text.trim()))
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    // Callers pass a month of 1 to 12 and a day of 1 or 16, which every month has; the year is
    // within chrono's range for every half-quarter that parses.
    NaiveDate::from_ymd_opt(year, month, day).unwrap_or(NaiveDate::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        parse_date(text).expect("a date")
    }

    #[test]
    fn half_quarters_split_each_quarter_in_two() {
        for (name, from, to) in [
            ("2021-Q1-1", "2021-01-01", "2021-02-15"),
            ("2021-Q1-2", "2021-02-16", "2021-03-31"),
            ("2020-Q1-2", "2020-02-16", "2020-03-31"),
            ("2021-Q2-1", "2021-04-01", "2021-05-15"),
            ("2021-Q2-2", "2021-05-16", "2021-06-30"),
            ("2021-Q3-1", "2021-07-01", "2021-08-15"),
            ("2021-Q3-2", "2021-08-16", "2021-09-30"),
            ("2020-Q4-1", "2020-10-01", "2020-11-15"),
            ("2020-Q4-2", "2020-11-16", "2020-12-31"),
        ] {
            let period = Period::parse(name).expect(name);
            assert_eq!(
                (period.from, period.to, period.name.as_deref()),
                (day(from), day(to), Some(name))
            );
            for date in [period.from, period.to] {
                assert_eq!(HalfQuarter::containing(date).to_string(), name);
            }
        }
    }

    #[test]
    fn half_quarters_follow_each_other_without_gaps() {
        let mut half_quarter: HalfQuarter = "2019-Q3-2".parse().expect("valid");
        for _ in 0..20 {
            let next = half_quarter.next();
            assert_eq!(half_quarter.last_day() + Days::new(1), next.first_day());
            assert_eq!(next.previous(), half_quarter);
            half_quarter = next;
        }
        assert_eq!(half_quarter.to_string(), "2022-Q1-2");
    }

    #[test]
    fn the_previous_period() {
        let previous = Period::parse("2021-Q1-1").expect("valid").previous();
        assert_eq!(previous.name.as_deref(), Some("2020-Q4-2"));
        let range = Period::parse("2020-10-05..2021-01-25").expect("valid");
        assert_eq!(range.num_days(), 113);
        let previous = range.previous();
        assert_eq!(
            (previous.from, previous.to),
            (day("2020-06-14"), day("2020-10-04"))
        );
        assert_eq!(previous.num_days(), 113);
    }

    #[test]
    fn refuses_what_is_not_a_period() {
        for text in [
            "2021-Q5-1",
            "2021-Q1-3",
            "2021-Q1",
            "21-Q1-1",
            "2021-01-10..2021-01-01",
            "2021-01-01..tomorrow",
            "2010-01-01..2010-02-01",
        ] {
            assert!(Period::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn boundaries_are_midnight_in_the_time_zone() {
        let paris = chrono_tz::Europe::Paris;
        let now: DateTime<Utc> = "2021-02-15T22:59:59Z".parse().expect("an instant");
        // 23:59:59 in Paris on 15 February: the first half ends at midnight, Paris time.
        assert_eq!(
            next_boundary(now, paris).to_rfc3339(),
            "2021-02-15T23:00:00+00:00"
        );
        let after: DateTime<Utc> = "2021-02-15T23:00:00Z".parse().expect("an instant");
        assert_eq!(
            next_boundary(after, paris).to_rfc3339(),
            "2021-03-31T22:00:00+00:00"
        );
        assert_eq!(last_completed(day("2021-02-16")).to_string(), "2021-Q1-1");
        assert_eq!(last_completed(day("2021-01-01")).to_string(), "2020-Q4-2");
        let period = Period::parse("2021-Q1-2").expect("valid");
        assert_eq!(
            period.end_instant(paris).to_rfc3339(),
            "2021-03-31T22:00:00+00:00"
        );
    }
}
