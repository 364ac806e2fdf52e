//! The verified-token cache (SPEC section 6): remembers that a token's
//! signature verified, keyed by the exact token bytes, bounded in size, never
//! beyond the token's `exp`, and only while the issuer's current key set holds
//! the very key object that verified it. Time checks and route rules still run
//! on every request; a hit only skips parsing and the signature.
//!
//! Beside it, a small cache of signatures that did NOT verify, under the same
//! rules (exact bytes, the very same key object): a client or attacker that
//! repeats one forged or corrupted token is refused without a second RSA
//! verification. It can only ever repeat a refusal (verification is
//! deterministic), and it is separate so that forged tokens cannot push
//! verified ones out.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora_memory_cache::MemoryCache;
use prometheus::IntCounter;

use crate::clock::UnixTime;
use crate::keys::VerifyingKey;
use crate::metrics::Metrics;
use crate::policy::token::ParsedToken;

/// The longest an entry is kept, whatever the token's `exp` says.
const MAX_ENTRY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Once the cache has been filled, a token is admitted on its second
/// verification only (TinyLFU's "doorkeeper"): tokens seen once, such as a
/// flood of unique tokens, then cost no insert, no eviction and no memory,
/// while a client that reuses its token pays one extra verification. The
/// doorkeeper remembers this many token hashes, direct-mapped (a collision
/// only admits or delays an entry; hits still compare the exact bytes).
const DOORKEEPER_SLOTS: usize = 4096;

/// How many refused signatures are remembered, and for how long (each entry
/// holds the token bytes, so at most `max_token_bytes`: 16 MiB in all at the
/// default).
const REJECTED_CAPACITY: usize = 1024;
const REJECTED_LIFETIME: Duration = Duration::from_secs(300);

/// A token whose signature verified.
pub(crate) struct CachedToken {
    /// The whole token, compared on every hit: the store is keyed by a hash,
    /// and a collision must never turn into a hit.
    token: Box<str>,
    pub parsed: Arc<ParsedToken>,
    /// The key object that verified it; the entry counts only while the
    /// issuer's current key set holds this same `Arc` for the `kid`.
    pub key: Arc<VerifyingKey>,
    exp: UnixTime,
}

impl CachedToken {
    /// Whether `current` (the key the issuer's set now holds for this kid) is
    /// the very key object this token was verified with.
    pub fn verified_by(&self, current: &Arc<VerifyingKey>) -> bool {
        Arc::ptr_eq(&self.key, current)
    }
}

/// A token whose signature did not verify: its bytes and the key object it
/// failed against, nothing else (the entry must stay small whatever a forger
/// puts in the claims: at most `max_token_bytes` each).
pub(crate) struct RejectedToken {
    token: Box<str>,
    key: Arc<VerifyingKey>,
    until: UnixTime,
}

impl RejectedToken {
    /// Whether `current` is the very key object it failed against (then it
    /// fails again).
    pub fn rejected_by(&self, current: &Arc<VerifyingKey>) -> bool {
        Arc::ptr_eq(&self.key, current)
    }
}

/// A bounded cache of verified tokens, shared by every request (cheap to
/// consult from many threads).
pub struct TokenCache {
    entries: MemoryCache<String, Arc<CachedToken>>,
    rejected: MemoryCache<String, Arc<RejectedToken>>,
    capacity: usize,
    /// Entries put so far; at `capacity` the doorkeeper starts admitting.
    inserted: AtomicUsize,
    seen_once: Box<[AtomicU64]>,
    hasher: ahash::RandomState,
    hits: IntCounter,
    misses: IntCounter,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache")
    }
}

impl TokenCache {
    /// A cache of at most about `capacity` tokens, counting its look-ups in
    /// `consent_gateway_token_cache_requests_total{result}`.
    pub fn new(capacity: usize, metrics: &Metrics) -> Self {
        TokenCache {
            entries: MemoryCache::new(capacity.max(1)),
            rejected: MemoryCache::new(REJECTED_CAPACITY.min(capacity.max(1))),
            capacity: capacity.max(1),
            inserted: AtomicUsize::new(0),
            seen_once: (0..DOORKEEPER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: ahash::RandomState::new(),
            hits: metrics
                .token_cache_requests_total
                .with_label_values(&["hit"]),
            misses: metrics
                .token_cache_requests_total
                .with_label_values(&["miss"]),
        }
    }

    /// The entry for exactly these token bytes, while `now` is before its `exp`.
    pub(crate) fn lookup(&self, token: &str, now: UnixTime) -> Option<Arc<CachedToken>> {
        let (entry, _) = self.entries.get(token);
        entry.filter(|e| &*e.token == token && now < e.exp)
    }

    /// Remembers that `key` verified `token`, until `exp` (capped).
    pub(crate) fn insert(
        &self,
        token: &str,
        parsed: Arc<ParsedToken>,
        key: Arc<VerifyingKey>,
        exp: UnixTime,
        now: UnixTime,
    ) {
        let remaining = exp - now;
        if remaining <= 0.0 {
            return;
        }
        let ttl = Duration::try_from_secs_f64(remaining)
            .unwrap_or(MAX_ENTRY_LIFETIME)
            .min(MAX_ENTRY_LIFETIME);
        if !self.admit(token) {
            return;
        }
        let entry = CachedToken {
            token: token.into(),
            parsed,
            key,
            exp,
        };
        self.entries.put(token, Arc::new(entry), Some(ttl));
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a verified `token` may enter: always until the cache has been
    /// filled once, then only when the doorkeeper saw it verified before.
    fn admit(&self, token: &str) -> bool {
        if self.inserted.load(Ordering::Relaxed) < self.capacity {
            return true;
        }
        // Never 0, the value of an empty slot.
        let hash = self.hasher.hash_one(token) | 1;
        let slot = &self.seen_once[(hash % DOORKEEPER_SLOTS as u64) as usize];
        if slot.load(Ordering::Relaxed) == hash {
            true
        } else {
            slot.store(hash, Ordering::Relaxed);
            false
        }
    }

    /// Drops the entry for `token` (its key left the set or changed).
    pub(crate) fn forget(&self, token: &str) {
        self.entries.remove(token);
    }

    /// The refused-signature entry for exactly these token bytes.
    pub(crate) fn lookup_rejected(&self, token: &str, now: UnixTime) -> Option<Arc<RejectedToken>> {
        let (entry, _) = self.rejected.get(token);
        entry.filter(|e| &*e.token == token && now < e.until)
    }

    /// Remembers that `token`'s signature did not verify with `key`.
    pub(crate) fn reject(&self, token: &str, key: Arc<VerifyingKey>, now: UnixTime) {
        let entry = RejectedToken {
            token: token.into(),
            key,
            until: now + REJECTED_LIFETIME.as_secs_f64(),
        };
        self.rejected
            .put(token, Arc::new(entry), Some(REJECTED_LIFETIME));
    }

    /// Counts one look-up that decided whether a signature must be verified.
    pub(crate) fn count(&self, hit: bool) {
        if hit {
            self.hits.inc();
        } else {
            self.misses.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_issuer::DevIssuer;
    use crate::keys::{Alg, KeySet};

    const NOW: UnixTime = 1_800_000_000.0;

    struct Fixture {
        dev: DevIssuer,
        keys: Arc<KeySet>,
    }

    impl Fixture {
        fn new() -> Self {
            let dev = DevIssuer::generate("k1").expect("RSA key");
            let keys = Arc::new(
                KeySet::parse(dev.jwks_json().as_bytes(), &[Alg::RS256], None).expect("jwks"),
            );
            Fixture { dev, keys }
        }

        fn token(&self, n: u32) -> String {
            self.dev
                .sign(&serde_json::json!({ "jti": format!("t{n}"), "exp": NOW + 600.0 }))
        }

        fn insert(&self, cache: &TokenCache, token: &str) {
            let parsed = Arc::new(ParsedToken::parse(token).expect("parses"));
            let key = Arc::clone(self.keys.get("k1").expect("kid"));
            cache.insert(token, parsed, key, NOW + 600.0, NOW);
        }
    }

    #[test]
    fn until_full_a_verified_token_is_cached_at_once() {
        let f = Fixture::new();
        let cache = TokenCache::new(3, &Metrics::new());
        for n in 0..3 {
            let token = f.token(n);
            f.insert(&cache, &token);
            assert!(cache.lookup(&token, NOW).is_some(), "token {n}");
        }
    }

    #[test]
    fn once_full_a_token_enters_on_its_second_verification() {
        let f = Fixture::new();
        let cache = TokenCache::new(2, &Metrics::new());
        for n in 0..2 {
            f.insert(&cache, &f.token(n));
        }
        let late = f.token(7);
        f.insert(&cache, &late);
        assert!(
            cache.lookup(&late, NOW).is_none(),
            "seen once: not admitted"
        );
        f.insert(&cache, &late);
        assert!(cache.lookup(&late, NOW).is_some(), "seen twice: admitted");
        // Another token seen once in between does not admit it either.
        let other = f.token(8);
        f.insert(&cache, &other);
        assert!(cache.lookup(&other, NOW).is_none());
    }

    #[test]
    fn a_refusal_is_remembered_for_exactly_these_bytes() {
        let f = Fixture::new();
        let cache = TokenCache::new(2, &Metrics::new());
        let token = f.token(1);
        let key = Arc::clone(f.keys.get("k1").expect("kid"));
        cache.reject(&token, Arc::clone(&key), NOW);
        let entry = cache.lookup_rejected(&token, NOW).expect("remembered");
        assert!(entry.rejected_by(&key));
        assert!(
            cache.lookup(&token, NOW).is_none(),
            "never a verified entry"
        );
        assert!(cache.lookup_rejected(&token[1..], NOW).is_none());
        assert!(cache
            .lookup_rejected(&token, NOW + REJECTED_LIFETIME.as_secs_f64())
            .is_none());
    }
}
