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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use pingora_memory_cache::MemoryCache;
use prometheus::IntCounter;

use crate::clock::UnixTime;
use crate::keys::VerifyingKey;
use crate::metrics::Metrics;
use crate::policy::token::ParsedToken;

/// The longest an entry is kept, whatever the token's `exp` says.
const MAX_ENTRY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Once the cache has been filled, a newly verified token does not enter it
/// at once: it waits in one of these probation slots (direct-mapped by the
/// token's hash, one atomic pointer swap, no insert into the shared map and
/// no eviction), and moves up into the cache on its first reuse. Consent
/// tokens are per data subject and used a few times in a row, so k uses cost
/// one verification; a stream of tokens each seen once (a flood of unique
/// tokens) only overwrites slots and never pushes reused tokens out. A slot
/// holds the token bytes, so at most `max_token_bytes` each: 16 MiB in all
/// at the default, ~3 MiB for typical Maskinporten tokens.
const PROBATION_SLOTS: usize = 1024;

/// How many refused signatures are remembered, and for how long (each entry
/// holds the token bytes, so at most `max_token_bytes`: 16 MiB in all at the
/// default).
const REJECTED_CAPACITY: usize = 1024;
const REJECTED_LIFETIME: Duration = Duration::from_secs(300);

/// A token's bytes and their hash, computed once per request and shared by
/// every look-up (the verified cache, the probation slots and the refused
/// signatures): a consent token is ~1.4 KB, and hashing it once instead of
/// up to five times saves ~1,000 instructions on a fresh token.
#[derive(Clone, Copy)]
pub(crate) struct TokenKey<'t> {
    bytes: &'t str,
    hash: u64,
}

/// The key the two `MemoryCache`s store under: the token's precomputed hash
/// (they hash these 8 bytes again, not the token). Entries hold the whole
/// token and every hit compares it, so a collision is a miss, never a hit.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Hashed(u64);

impl std::hash::Hash for Hashed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

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
    /// Whether this entry is for exactly these bytes and `now` is before its
    /// `exp`.
    fn matches(&self, token: &TokenKey<'_>, now: UnixTime) -> bool {
        &*self.token == token.bytes && now < self.exp
    }

    /// Whether `current` (the key the issuer's set now holds for this kid) is
    /// the very key object this token was verified with.
    pub fn verified_by(&self, current: &Arc<VerifyingKey>) -> bool {
        Arc::ptr_eq(&self.key, current)
    }
}

/// How long an entry for a token expiring at `exp` may live from `now`
/// (capped), or `None` once it has expired.
fn time_to_live(exp: UnixTime, now: UnixTime) -> Option<Duration> {
    let remaining = exp - now;
    if remaining <= 0.0 {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(remaining)
            .unwrap_or(MAX_ENTRY_LIFETIME)
            .min(MAX_ENTRY_LIFETIME),
    )
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
    entries: MemoryCache<Hashed, Arc<CachedToken>>,
    rejected: MemoryCache<Hashed, Arc<RejectedToken>>,
    capacity: usize,
    /// Entries put so far; at `capacity` new tokens go to probation first.
    inserted: AtomicUsize,
    probation: Box<[ArcSwapOption<CachedToken>]>,
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
            probation: (0..PROBATION_SLOTS)
                .map(|_| ArcSwapOption::empty())
                .collect(),
            hasher: ahash::RandomState::new(),
            hits: metrics
                .token_cache_requests_total
                .with_label_values(&["hit"]),
            misses: metrics
                .token_cache_requests_total
                .with_label_values(&["miss"]),
        }
    }

    /// The key of these token bytes for the calls below (their one hash).
    pub(crate) fn key<'t>(&self, token: &'t str) -> TokenKey<'t> {
        TokenKey {
            bytes: token,
            hash: self.hasher.hash_one(token),
        }
    }

    /// The entry for exactly these token bytes, while `now` is before its `exp`.
    /// A token found in probation moves up into the cache (it is being
    /// reused).
    pub(crate) fn lookup(&self, token: &TokenKey<'_>, now: UnixTime) -> Option<Arc<CachedToken>> {
        let hashed = Hashed(token.hash);
        let (entry, _) = self.entries.get(&hashed);
        if let Some(entry) = entry.filter(|e| e.matches(token, now)) {
            return Some(entry);
        }
        let slot = self.probation_slot(token);
        let waiting = slot.load_full().filter(|e| e.matches(token, now))?;
        if let Some(ttl) = time_to_live(waiting.exp, now) {
            self.entries.put(&hashed, Arc::clone(&waiting), Some(ttl));
            self.inserted.fetch_add(1, Ordering::Relaxed);
        }
        Some(waiting)
    }

    /// Remembers that `key` verified `token`, until `exp` (capped): in the
    /// cache while it has room, in probation once it has been filled.
    pub(crate) fn insert(
        &self,
        token: &TokenKey<'_>,
        parsed: Arc<ParsedToken>,
        key: Arc<VerifyingKey>,
        exp: UnixTime,
        now: UnixTime,
    ) {
        let Some(ttl) = time_to_live(exp, now) else {
            return;
        };
        let entry = Arc::new(CachedToken {
            token: token.bytes.into(),
            parsed,
            key,
            exp,
        });
        if self.inserted.load(Ordering::Relaxed) < self.capacity {
            self.entries.put(&Hashed(token.hash), entry, Some(ttl));
            self.inserted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.probation_slot(token).store(Some(entry));
        }
    }

    fn probation_slot(&self, token: &TokenKey<'_>) -> &ArcSwapOption<CachedToken> {
        &self.probation[(token.hash % PROBATION_SLOTS as u64) as usize]
    }

    /// Drops the entry for `token` (its key left the set or changed).
    pub(crate) fn forget(&self, token: &TokenKey<'_>) {
        self.entries.remove(&Hashed(token.hash));
        let slot = self.probation_slot(token);
        if slot
            .load()
            .as_ref()
            .is_some_and(|e| &*e.token == token.bytes)
        {
            slot.store(None);
        }
    }

    /// The refused-signature entry for exactly these token bytes.
    pub(crate) fn lookup_rejected(
        &self,
        token: &TokenKey<'_>,
        now: UnixTime,
    ) -> Option<Arc<RejectedToken>> {
        let (entry, _) = self.rejected.get(&Hashed(token.hash));
        entry.filter(|e| &*e.token == token.bytes && now < e.until)
    }

    /// Remembers that `token`'s signature did not verify with `key`.
    pub(crate) fn reject(&self, token: &TokenKey<'_>, key: Arc<VerifyingKey>, now: UnixTime) {
        let entry = RejectedToken {
            token: token.bytes.into(),
            key,
            until: now + REJECTED_LIFETIME.as_secs_f64(),
        };
        self.rejected.put(
            &Hashed(token.hash),
            Arc::new(entry),
            Some(REJECTED_LIFETIME),
        );
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
            cache.insert(&cache.key(token), parsed, key, NOW + 600.0, NOW);
        }
    }

    #[test]
    fn until_full_a_verified_token_is_cached_at_once() {
        let f = Fixture::new();
        let cache = TokenCache::new(3, &Metrics::new());
        for n in 0..3 {
            let token = f.token(n);
            f.insert(&cache, &token);
            assert!(cache.lookup(&cache.key(&token), NOW).is_some(), "token {n}");
        }
    }

    /// Whether `token` sits in the shared cache itself (not in probation).
    fn in_cache(cache: &TokenCache, token: &str) -> bool {
        cache
            .entries
            .get(&Hashed(cache.key(token).hash))
            .0
            .is_some()
    }

    #[test]
    fn once_full_a_token_waits_in_probation_and_moves_up_on_reuse() {
        let f = Fixture::new();
        let cache = TokenCache::new(2, &Metrics::new());
        for n in 0..2 {
            f.insert(&cache, &f.token(n));
        }
        let late = f.token(7);
        f.insert(&cache, &late);
        assert!(!in_cache(&cache, &late), "seen once: in probation only");
        let entry = cache
            .lookup(&cache.key(&late), NOW)
            .expect("found in probation");
        assert_eq!(&*entry.token, late.as_str());
        assert!(in_cache(&cache, &late), "reused: moved up");
        assert!(
            cache.lookup(&cache.key(&late), NOW + 601.0).is_none(),
            "expired"
        );
    }

    #[test]
    fn a_flood_of_tokens_seen_once_leaves_the_cache_alone() {
        let f = Fixture::new();
        let cache = TokenCache::new(2, &Metrics::new());
        let kept: Vec<String> = (0..2).map(|n| f.token(n)).collect();
        for token in &kept {
            f.insert(&cache, token);
        }
        for n in 100..164 {
            f.insert(&cache, &f.token(n));
        }
        for token in &kept {
            assert!(in_cache(&cache, token), "a reused token stays");
        }
        // A probation slot holds one token: the last one to land there.
        let last = f.token(163);
        assert!(cache.lookup(&cache.key(&last), NOW).is_some());
    }

    #[test]
    fn forgetting_a_token_clears_its_probation_slot_too() {
        let f = Fixture::new();
        let cache = TokenCache::new(1, &Metrics::new());
        f.insert(&cache, &f.token(0));
        let late = f.token(1);
        f.insert(&cache, &late);
        cache.forget(&cache.key(&late));
        assert!(cache.lookup(&cache.key(&late), NOW).is_none());
        let other = f.token(0);
        cache.forget(&cache.key(&other));
        assert!(cache.lookup(&cache.key(&other), NOW).is_none());
    }

    #[test]
    fn a_hash_collision_is_a_miss_never_a_hit() {
        let f = Fixture::new();
        let cache = TokenCache::new(4, &Metrics::new());
        let token = f.token(1);
        f.insert(&cache, &token);
        let key = Arc::clone(f.keys.get("k1").expect("kid"));
        cache.reject(&cache.key(&f.token(2)), key, NOW);
        // Other bytes under the very same hash as the cached token, and as
        // the refused one.
        let other = f.token(3);
        for hash in [cache.key(&token).hash, cache.key(&f.token(2)).hash] {
            let collision = TokenKey {
                bytes: &other,
                hash,
            };
            assert!(cache.lookup(&collision, NOW).is_none());
            assert!(cache.lookup_rejected(&collision, NOW).is_none());
        }
        assert!(cache.lookup(&cache.key(&token), NOW).is_some());
    }

    #[test]
    fn a_refusal_is_remembered_for_exactly_these_bytes() {
        let f = Fixture::new();
        let cache = TokenCache::new(2, &Metrics::new());
        let token = f.token(1);
        let key = Arc::clone(f.keys.get("k1").expect("kid"));
        cache.reject(&cache.key(&token), Arc::clone(&key), NOW);
        let entry = cache
            .lookup_rejected(&cache.key(&token), NOW)
            .expect("remembered");
        assert!(entry.rejected_by(&key));
        assert!(
            cache.lookup(&cache.key(&token), NOW).is_none(),
            "never a verified entry"
        );
        assert!(cache
            .lookup_rejected(&cache.key(&token[1..]), NOW)
            .is_none());
        assert!(cache
            .lookup_rejected(&cache.key(&token), NOW + REJECTED_LIFETIME.as_secs_f64())
            .is_none());
    }
}
