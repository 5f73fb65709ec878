//! A credential's quotas: events per second (a token bucket of one second's events, or of one
//! batch when a batch is larger) and new unregistered campaigns per day, so that one compromised
//! or faulty sender cannot take the service or the campaign slots from the others. Quotas live
//! in memory: a restart gives every credential a full bucket and a fresh day.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::NaiveDate;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as Rate, RateLimiter};
use parking_lot::Mutex;

/// A credential's limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events per second; `None` for no limit.
    pub events_per_second: Option<NonZeroU32>,
    /// The most events one bucket holds: a whole batch must fit.
    pub burst: NonZeroU32,
    /// New unregistered campaigns per day.
    pub new_campaigns_per_day: u32,
}

/// A batch refused because its sender is over its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this credential may send {per_second} events per second and is over that rate: retry in {} s",
    retry_after_seconds(*.retry_after)
)]
pub struct RateLimited {
    pub per_second: u32,
    pub retry_after: Duration,
}

/// Whole seconds to wait before retrying, at least one (HTTP's `Retry-After`).
pub fn retry_after_seconds(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The state of a credential's quotas.
#[derive(Debug)]
pub struct Quota {
    limits: Limits,
    bucket: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
    campaigns: Mutex<DayCampaigns>,
}

/// The new campaigns a credential opened on one day.
#[derive(Debug, Default)]
struct DayCampaigns {
    day: Option<NaiveDate>,
    opened: HashSet<String>,
}

impl Quota {
    pub fn new(limits: Limits) -> Quota {
        let bucket = limits.events_per_second.map(|per_second| {
            RateLimiter::direct(Rate::per_second(per_second).allow_burst(limits.burst))
        });
        Quota {
            limits,
            bucket,
            clock: DefaultClock::default(),
            campaigns: Mutex::new(DayCampaigns::default()),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes `events` from the bucket, or says how long until they are there.
    pub fn take(&self, events: usize) -> Result<(), RateLimited> {
        let (Some(bucket), Some(per_second)) = (&self.bucket, self.limits.events_per_second) else {
            return Ok(());
        };
        let Some(events) = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        let refused = |retry_after| RateLimited {
            per_second: per_second.get(),
            retry_after,
        };
        match bucket.check_n(events) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(refused(not_until.wait_time_from(self.clock.now()))),
            // More than a bucket holds: only a batch over max_batch_events, refused before this.
            Err(_insufficient) => Err(refused(Duration::from_secs(1))),
        }
    }

    /// Whether this credential may open `campaign` on `day`: yes when it already did that day
    /// or has quota left (then it is noted).
    pub fn open_campaign(&self, campaign: &str, day: NaiveDate) -> bool {
        let mut campaigns = self.campaigns.lock();
        if campaigns.day != Some(day) {
            campaigns.day = Some(day);
            campaigns.opened.clear();
        }
        if campaigns.opened.contains(campaign) {
            return true;
        }
        if campaigns.opened.len() >= self.limits.new_campaigns_per_day as usize {
            return false;
        }
        campaigns.opened.insert(campaign.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32, campaigns: u32) -> Limits {
        Limits {
            events_per_second: NonZeroU32::new(per_second),
            burst: NonZeroU32::new(burst).expect("a burst"),
            new_campaigns_per_day: campaigns,
        }
    }

    #[test]
    fn the_bucket_gives_its_burst_then_refuses_with_a_wait() {
        let quota = Quota::new(limits(10, 100, 0));
        assert_eq!(quota.take(100), Ok(()));
        let refused = quota.take(50).expect_err("the bucket is empty");
        assert_eq!(refused.per_second, 10);
        // 50 events at 10 a second: about five seconds.
        assert!(refused.retry_after > Duration::from_secs(4), "{refused:?}");
        assert!(refused.retry_after <= Duration::from_secs(5), "{refused:?}");
        assert_eq!(retry_after_seconds(refused.retry_after), 5);
        assert!(refused.to_string().contains("10 events per second"));
    }

    #[test]
    fn no_rate_means_no_limit() {
        let quota = Quota::new(limits(0, 1, 0));
        for _ in 0..100 {
            assert_eq!(quota.take(1_000_000), Ok(()));
        }
    }

    #[test]
    fn new_campaigns_are_counted_per_day() {
        let quota = Quota::new(limits(0, 1, 2));
        let monday = NaiveDate::from_ymd_opt(2026, 11, 30).expect("a date");
        let tuesday = monday.succ_opt().expect("a date");
        assert!(quota.open_campaign("a", monday));
        assert!(quota.open_campaign("b", monday));
        assert!(quota.open_campaign("a", monday), "already opened today");
        assert!(!quota.open_campaign("c", monday));
        assert!(quota.open_campaign("c", tuesday));
    }
}
