//! Injectable time: the decision core never reads the system clock itself,
//! so expiry and leeway boundaries are testable exactly and without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds, with sub-second precision.
pub type UnixTime = f64;

/// A source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixTime;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// A clock that stands still until told otherwise (tests, `explain`).
#[derive(Debug, Default)]
pub struct FixedClock {
    bits: AtomicU64,
}

impl FixedClock {
    pub fn new(now: UnixTime) -> Self {
        Self {
            bits: AtomicU64::new(now.to_bits()),
        }
    }

    pub fn set(&self, now: UnixTime) {
        self.bits.store(now.to_bits(), Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        f64::from_bits(self.bits.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_holds_and_moves() {
        let c = FixedClock::new(100.5);
        assert_eq!(c.now(), 100.5);
        c.set(200.0);
        assert_eq!(c.now(), 200.0);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800.0);
    }
}
