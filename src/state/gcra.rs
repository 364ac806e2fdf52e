//! The generic cell rate algorithm both backends run (the Redis one as a
//! Lua script in `redis.rs`, the same arithmetic): a bucket of
//! `requests + burst` refilled at `requests` per `period`, in microseconds.

use std::time::Duration;

use crate::config::RateLimit;

/// The limiter's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests still allowed right now.
    pub remaining: u64,
    /// When refused: the wait before one more is allowed.
    pub retry_after: Duration,
    /// When the bucket is full again.
    pub reset: Duration,
}

/// A limit as the algorithm reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Microseconds between two requests at the sustained rate (>= 1).
    pub interval: u64,
    /// How far ahead of now the theoretical arrival time may run.
    pub tolerance: u64,
}

impl Params {
    pub fn of(limit: &RateLimit) -> Params {
        let period = u64::try_from(limit.period.as_micros()).unwrap_or(u64::MAX);
        let interval = (period / limit.requests.max(1)).max(1);
        let cells = limit.requests.saturating_add(limit.burst).max(1) - 1;
        Params {
            interval,
            tolerance: interval.saturating_mul(cells),
        }
    }
}

/// One request at `now` against the stored theoretical arrival time `tat`:
/// the decision and, when allowed, the new `tat` to store.
pub fn step(tat: Option<u64>, now: u64, p: &Params) -> (RateDecision, Option<u64>) {
    let tat = tat.unwrap_or(now).max(now);
    let allow_at = tat.saturating_sub(p.tolerance);
    if now < allow_at {
        let decision = RateDecision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_micros(allow_at - now),
            reset: Duration::from_micros(tat - now),
        };
        return (decision, None);
    }
    let new_tat = tat.saturating_add(p.interval);
    // Further requests allowed at this instant: each needs
    // `now >= tat - tolerance` with `tat` one interval further on.
    let limit = now.saturating_add(p.tolerance);
    let remaining = if limit >= new_tat {
        (limit - new_tat) / p.interval + 1
    } else {
        0
    };
    let decision = RateDecision {
        allowed: true,
        remaining,
        retry_after: Duration::ZERO,
        reset: Duration::from_micros(new_tat - now),
    };
    (decision, Some(new_tat))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RatePer;

    fn limit(requests: u64, burst: u64) -> Params {
        Params::of(&RateLimit {
            per: RatePer::Consumer,
            requests,
            period: Duration::from_secs(1),
            burst,
            allow_on_store_error: true,
        })
    }

    fn run(p: &Params, n: usize, now: u64) -> (usize, Option<u64>, Vec<RateDecision>) {
        let mut tat = None;
        let mut allowed = 0;
        let mut all = Vec::new();
        for _ in 0..n {
            let (d, next) = step(tat, now, p);
            if let Some(next) = next {
                tat = Some(next);
                allowed += 1;
            }
            all.push(d);
        }
        (allowed, tat, all)
    }

    #[test]
    fn a_bucket_holds_requests_plus_burst() {
        let (allowed, _, all) = run(&limit(5, 0), 20, 1_000_000);
        assert_eq!(allowed, 5);
        let remaining: Vec<u64> = all.iter().take(5).map(|d| d.remaining).collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        assert!(!all[5].allowed && all[5].retry_after == Duration::from_millis(200));
        let (allowed, _, _) = run(&limit(100, 20), 500, 7);
        assert_eq!(allowed, 120);
    }

    #[test]
    fn it_refills_at_the_sustained_rate() {
        let p = limit(5, 0);
        let (_, tat, _) = run(&p, 5, 1_000_000);
        let (d, _) = step(tat, 1_000_000 + 199_999, &p);
        assert!(!d.allowed);
        let (d, _) = step(tat, 1_000_000 + 200_000, &p);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }
}
