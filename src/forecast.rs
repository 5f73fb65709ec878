//! When a campaign (or the programme) reaches its target at the current pace: pure arithmetic on
//! a daily timeline of certificates, no IO and no clock (the caller says which day is today).
//!
//! The method, as the pages and the README state it:
//!
//! - **Pace**: the certificates of the last four *complete* weeks (the 28 days before today;
//!   today is still filling up), divided by 28: certificates per day.
//! - **Expected date**: today plus the days the remaining certificates (target − certified) take
//!   at that pace, rounded up.
//! - **Range**: the same with the slowest and the fastest of those four weeks, as if every
//!   coming week were like it. The slowest week may give no date (a week without certificates,
//!   or more than a year): the range is then open-ended.
//! - **Not at the current pace** when the expected date is more than a year (365 days) away, or
//!   the pace is zero. **Reached** (and on which day) once certified ≥ target.
//!
//! Targets count certified learners, as `progress` (certified / target) does.

use chrono::{Days, NaiveDate};
use serde::Serialize;

use crate::figures::{CampaignCounters, DayCounters, Figures};

/// The days of pace the forecast looks back over: four weeks.
pub const WINDOW_DAYS: u64 = 28;
/// How far ahead a date is still forecast; beyond it the target is "not at the current pace".
pub const HORIZON_DAYS: u64 = 365;

/// The outlook of one target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Forecast {
    /// The day the forecast is made on (today, in the programme's time zone).
    pub as_of: NaiveDate,
    /// Certificates per week over the last four complete weeks.
    pub pace_per_week: f64,
    #[serde(flatten)]
    pub outlook: Outlook,
}

/// What the pace says of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outlook {
    /// certified ≥ target since `on` (the day the running total reached it; `as_of` when the
    /// timeline does not say, e.g. a target lowered below what was already counted).
    Reached { on: NaiveDate },
    /// The target is reached on `date` at the pace of the last four weeks; between `earliest`
    /// (the fastest of the four weeks) and `latest` (the slowest; `None`: more than a year, or
    /// never at that week's pace).
    Expected {
        date: NaiveDate,
        earliest: NaiveDate,
        latest: Option<NaiveDate>,
    },
    /// More than a year at the current pace, or no certificate in four weeks.
    NotAtCurrentPace,
}

/// The forecast for `target` on `today`, from `days` (what was new each day, in order or not;
/// days after today are ignored) and `certified` (the current count, which the timeline sums
/// to). `None` without a target (or a target of zero).
pub fn forecast(
    days: &[DayCounters],
    certified: u64,
    target: Option<u64>,
    today: NaiveDate,
) -> Option<Forecast> {
    let target = target.filter(|target| *target > 0)?;
    let window_start = today - Days::new(WINDOW_DAYS);
    let mut weeks = [0u64; 4];
    for day in days {
        let date = day.day.date();
        if date >= window_start && date < today {
            let week = usize::try_from((date - window_start).num_days() / 7).unwrap_or(0);
            weeks[week.min(3)] += day.certified;
        }
    }
    let in_window: u64 = weeks.iter().sum();
    #[allow(clippy::cast_precision_loss)] // Counts stay far below 2^52.
    let pace_per_week = in_window as f64 / 4.0;
    let outlook = if certified >= target {
        Outlook::Reached {
            on: reached_on(days, target, today),
        }
    } else {
        let remaining = target - certified;
        let at = |per_week: u64| -> Option<NaiveDate> {
            // Days to go at `per_week` / 7 per day, rounded up, without floating point:
            // ceil(remaining × 7 / per_week).
            let per_week = u128::from(per_week);
            if per_week == 0 {
                return None;
            }
            let total_days = u64::try_from((u128::from(remaining) * 7).div_ceil(per_week)).ok()?;
            (total_days <= HORIZON_DAYS).then(|| today + Days::new(total_days))
        };
        // The pace over the four weeks is their total per 28 days: ceil(remaining × 28 / total).
        let expected = (in_window > 0)
            .then(|| (u128::from(remaining) * 28).div_ceil(u128::from(in_window)))
            .and_then(|total_days| u64::try_from(total_days).ok())
            .filter(|total_days| *total_days <= HORIZON_DAYS)
            .map(|total_days| today + Days::new(total_days));
        match expected {
            None => Outlook::NotAtCurrentPace,
            Some(date) => {
                let fastest = weeks.iter().copied().max().unwrap_or(0);
                let slowest = weeks.iter().copied().min().unwrap_or(0);
                Outlook::Expected {
                    date,
                    earliest: at(fastest).unwrap_or(date),
                    latest: at(slowest),
                }
            }
        }
    };
    Some(Forecast {
        as_of: today,
        pace_per_week,
        outlook,
    })
}

/// The forecast of published counters (a campaign's or the totals'), from their timeline in
/// `figures`.
pub fn of_counters(
    figures: &Figures,
    counters: &CampaignCounters,
    today: NaiveDate,
) -> Option<Forecast> {
    counters.target?;
    let days = figures.timeline(&counters.campaign, None, None)?;
    forecast(&days, counters.certified, counters.target, today)
}

/// The day the running total of certificates first reached `target`.
fn reached_on(days: &[DayCounters], target: u64, today: NaiveDate) -> NaiveDate {
    let mut sorted: Vec<&DayCounters> = days.iter().collect();
    sorted.sort_by_key(|day| day.day);
    let mut running = 0u64;
    for day in sorted {
        running += day.certified;
        if running >= target {
            return day.day.date();
        }
    }
    today
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::day::Day;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a date")
    }

    /// `per_day` certificates on each of the `count` days before `today`.
    fn steady(today: &str, count: u64, per_day: impl Fn(u64) -> u64) -> Vec<DayCounters> {
        (1..=count)
            .map(|back| DayCounters {
                day: Day::from_date(date(today) - Days::new(back)).expect("a day in range"),
                clicks: 0,
                enrolled: 0,
                started: 0,
                certified: per_day(back),
            })
            .collect()
    }

    fn check(days: &[DayCounters], certified: u64, target: u64, today: &str, expected: Outlook) {
        let forecast = forecast(days, certified, Some(target), date(today)).expect("a target");
        assert_eq!(forecast.outlook, expected, "{forecast:?}");
        assert_eq!(forecast.as_of, date(today));
    }

    #[test]
    fn a_steady_pace_gives_one_date_and_a_narrow_range() {
        // 100 a day for 60 days: 6,000 certified, 4,000 to go at 100 a day: 40 days.
        let days = steady("2021-01-01", 60, |_| 100);
        check(
            &days,
            6_000,
            10_000,
            "2021-01-01",
            Outlook::Expected {
                date: date("2021-02-10"),
                earliest: date("2021-02-10"),
                latest: Some(date("2021-02-10")),
            },
        );
        let forecast = forecast(&days, 6_000, Some(10_000), date("2021-01-01")).expect("a target");
        assert!((forecast.pace_per_week - 700.0).abs() < 1e-9);
    }

    #[test]
    fn the_range_comes_from_the_slowest_and_fastest_weeks() {
        // Weeks (oldest first) of 70, 140, 210 and 280 a week: 700 in 28 days, 25 a day.
        // 1,000 to go: 40 days at 25/day; 25 days at 280/week; 100 days at 70/week.
        let days = steady("2021-03-01", 28, |back| match (back - 1) / 7 {
            0 => 40,
            1 => 30,
            2 => 20,
            _ => 10,
        });
        check(
            &days,
            700,
            1_700,
            "2021-03-01",
            Outlook::Expected {
                date: date("2021-04-10"),
                earliest: date("2021-03-26"),
                latest: Some(date("2021-06-09")),
            },
        );
    }

    #[test]
    fn a_silent_week_leaves_the_range_open_ended() {
        let days = steady("2021-03-01", 21, |back| if back <= 7 { 0 } else { 10 });
        let forecast = forecast(&days, 140, Some(280), date("2021-03-01")).expect("a target");
        // 140 in 28 days: 5 a day; 140 to go: 28 days.
        assert_eq!(
            forecast.outlook,
            Outlook::Expected {
                date: date("2021-03-29"),
                earliest: date("2021-03-15"),
                latest: None,
            }
        );
    }

    #[test]
    fn more_than_a_year_or_no_pace_is_not_at_the_current_pace() {
        // 1 a day: 366 to go takes 366 days, one more than the horizon.
        let days = steady("2021-01-01", 28, |_| 1);
        check(&days, 28, 28 + 366, "2021-01-01", Outlook::NotAtCurrentPace);
        // 365 to go is still a date.
        check(
            &days,
            28,
            28 + 365,
            "2021-01-01",
            Outlook::Expected {
                date: date("2022-01-01"),
                earliest: date("2022-01-01"),
                latest: Some(date("2022-01-01")),
            },
        );
        // Certificates long ago, none in the last four weeks.
        let old = steady("2020-11-01", 30, |_| 50);
        check(&old, 1_500, 3_000, "2021-01-01", Outlook::NotAtCurrentPace);
        check(&[], 0, 10, "2021-01-01", Outlook::NotAtCurrentPace);
    }

    #[test]
    fn today_and_later_days_do_not_count_towards_the_pace() {
        let mut days = steady("2021-01-01", 28, |_| 10);
        // A burst today (still filling up) and a day in the future (clock skew) change nothing
        // but the remaining count.
        for (day, certified) in [("2021-01-01", 1_000), ("2021-01-05", 1_000)] {
            days.push(DayCounters {
                day: Day::from_date(date(day)).expect("a day"),
                clicks: 0,
                enrolled: 0,
                started: 0,
                certified,
            });
        }
        let forecast = forecast(&days, 280, Some(420), date("2021-01-01")).expect("a target");
        assert!((forecast.pace_per_week - 70.0).abs() < 1e-9);
        assert_eq!(
            forecast.outlook,
            Outlook::Expected {
                date: date("2021-01-15"),
                earliest: date("2021-01-15"),
                latest: Some(date("2021-01-15")),
            }
        );
    }

    #[test]
    fn a_reached_target_says_when() {
        // 100 a day over the 10 days before 2021-01-11: the 500th on 2021-01-05.
        let days = steady("2021-01-11", 10, |_| 100);
        check(
            &days,
            1_000,
            500,
            "2021-01-11",
            Outlook::Reached {
                on: date("2021-01-05"),
            },
        );
        // Counted but not in the timeline (cannot happen in suivi): reached, as of today.
        check(
            &[],
            10,
            5,
            "2021-01-11",
            Outlook::Reached {
                on: date("2021-01-11"),
            },
        );
    }

    #[test]
    fn no_target_no_forecast() {
        let days = steady("2021-01-01", 28, |_| 10);
        assert_eq!(forecast(&days, 280, None, date("2021-01-01")), None);
        assert_eq!(forecast(&days, 280, Some(0), date("2021-01-01")), None);
    }

    #[test]
    fn the_json_names_the_status() {
        let days = steady("2021-01-01", 28, |_| 10);
        let json = serde_json::to_value(
            forecast(&days, 280, Some(420), date("2021-01-01")).expect("a target"),
        )
        .expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "as_of": "2021-01-01",
                "pace_per_week": 70.0,
                "status": "expected",
                "date": "2021-01-15",
                "earliest": "2021-01-15",
                "latest": "2021-01-15",
            })
        );
    }
}
