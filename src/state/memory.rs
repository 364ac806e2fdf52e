//! The `memory` backend: one-time uses and rate-limit cells in this process
//! (one replica), bounded, expired entries swept when the map fills.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::gcra::{self, Params, RateDecision};
use super::StoreError;

/// Entries each map holds at most; past it, expired ones are swept and,
/// if none expired, a new key is refused (fail closed).
pub const MAX_ENTRIES: usize = 1_000_000;

/// A value and the time (microseconds since the store started) it expires.
struct Entry<V> {
    value: V,
    expires: u64,
}

/// The memory store.
pub struct MemoryStore {
    started: Instant,
    once: Mutex<HashMap<String, Entry<String>>>,
    cells: Mutex<HashMap<String, Entry<u64>>>,
    max_entries: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Makes room for one more key, or says there is none.
fn room<V>(map: &mut HashMap<String, Entry<V>>, now: u64, max: usize) -> Result<(), StoreError> {
    if map.len() >= max {
        map.retain(|_, e| e.expires > now);
    }
    if map.len() >= max {
        return Err(StoreError::Full);
    }
    Ok(())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }

    pub fn with_capacity(max_entries: usize) -> Self {
        Self {
            started: Instant::now(),
            once: Mutex::new(HashMap::new()),
            cells: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    fn now(&self) -> u64 {
        micros(self.started.elapsed())
    }

    /// Takes `key` for `ttl` unless a live use holds it.
    pub fn use_once(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.now();
        let mut once = self.once.lock().unwrap_or_else(|p| p.into_inner());
        if once.get(key).is_some_and(|e| e.expires > now) {
            return Ok(false);
        }
        room(&mut once, now, self.max_entries)?;
        once.insert(
            key.to_string(),
            Entry {
                value: token.to_string(),
                expires: now.saturating_add(micros(ttl)),
            },
        );
        Ok(true)
    }

    /// Removes `key` if `token` holds it.
    pub fn give_back(&self, key: &str, token: &str) {
        let mut once = self.once.lock().unwrap_or_else(|p| p.into_inner());
        if once.get(key).is_some_and(|e| e.value == token) {
            once.remove(key);
        }
    }

    /// One request against the cell at `key`.
    pub fn rate(&self, key: &str, params: &Params) -> Result<RateDecision, StoreError> {
        let now = self.now();
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        let tat = cells.get(key).filter(|e| e.expires > now).map(|e| e.value);
        let (decision, next) = gcra::step(tat, now, params);
        if let Some(next) = next {
            if tat.is_none() {
                room(&mut cells, now, self.max_entries)?;
            }
            cells.insert(
                key.to_string(),
                Entry {
                    value: next,
                    expires: next,
                },
            );
        }
        Ok(decision)
    }

    /// `rate`, then `use_once` only if the rate allowed: one call, each
    /// key under its map's lock (the rate cell is counted even when the
    /// consent turns out used, as with two calls).
    pub fn rate_and_use_once(
        &self,
        rate_key: &str,
        params: &Params,
        once_key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<super::RateAndOnce, StoreError> {
        let decision = self.rate(rate_key, params)?;
        let claimed = match decision.allowed {
            true => Some(self.use_once(once_key, token, ttl)?),
            false => None,
        };
        Ok(super::RateAndOnce { decision, claimed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_once_until_given_back_by_its_holder() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(60);
        assert_eq!(store.use_once("k", "a", ttl), Ok(true));
        assert_eq!(store.use_once("k", "b", ttl), Ok(false));
        store.give_back("k", "b");
        assert_eq!(store.use_once("k", "c", ttl), Ok(false));
        store.give_back("k", "a");
        assert_eq!(store.use_once("k", "c", ttl), Ok(true));
    }

    #[test]
    fn a_full_store_refuses_new_keys_and_keeps_old_ones() {
        let store = MemoryStore::with_capacity(2);
        let ttl = Duration::from_secs(60);
        assert_eq!(store.use_once("a", "t", ttl), Ok(true));
        assert_eq!(store.use_once("b", "t", ttl), Ok(true));
        assert_eq!(store.use_once("c", "t", ttl), Err(StoreError::Full));
        assert_eq!(store.use_once("a", "t", ttl), Ok(false));
    }

    #[test]
    fn a_rate_refusal_leaves_the_consent_unused() {
        let store = MemoryStore::new();
        let p = Params {
            interval: 3_600_000_000,
            tolerance: 0,
        };
        let ttl = Duration::from_secs(60);
        let first = store.rate_and_use_once("r", &p, "a", "t", ttl);
        assert_eq!(
            first.map(|c| (c.decision.allowed, c.claimed)),
            Ok((true, Some(true)))
        );
        // Refused by the rate: `b` is not touched.
        let refused = store.rate_and_use_once("r", &p, "b", "t", ttl);
        assert_eq!(
            refused.map(|c| (c.decision.allowed, c.claimed)),
            Ok((false, None))
        );
        assert_eq!(store.use_once("b", "u", ttl), Ok(true));
        // Allowed by another rate key, `a` is already used.
        let used = store.rate_and_use_once("r2", &p, "a", "t", ttl);
        assert_eq!(used.map(|c| c.claimed), Ok(Some(false)));
    }

    #[test]
    fn expired_uses_are_swept_for_room() {
        let store = MemoryStore::with_capacity(1);
        assert_eq!(store.use_once("a", "t", Duration::ZERO), Ok(true));
        assert_eq!(store.use_once("b", "t", Duration::from_secs(9)), Ok(true));
    }
}
