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

use std::sync::Arc;
use std::time::Duration;

use pingora_memory_cache::MemoryCache;
use prometheus::IntCounter;

use crate::clock::UnixTime;
use crate::keys::VerifyingKey;
use crate::metrics::Metrics;
use crate::policy::auth::ParsedToken;

/// The longest an entry is kept, whatever the token's `exp` says.
const MAX_ENTRY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How many refused signatures are remembered, and for how long.
const REJECTED_CAPACITY: usize = 1024;
const REJECTED_LIFETIME: Duration = Duration::from_secs(300);

/// A token whose signature verified (in `entries`) or did not (in `rejected`).
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

    /// For a refused signature: whether `current` is the very key object it
    /// failed against (then it fails again).
    pub fn rejected_by(&self, current: &Arc<VerifyingKey>) -> bool {
        Arc::ptr_eq(&self.key, current)
    }
}

/// A bounded cache of verified tokens, shared by every request (cheap to
/// consult from many threads).
pub struct TokenCache {
    entries: MemoryCache<String, Arc<CachedToken>>,
    rejected: MemoryCache<String, Arc<CachedToken>>,
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
        let entry = CachedToken {
            token: token.into(),
            parsed,
            key,
            exp,
        };
        self.entries.put(token, Arc::new(entry), Some(ttl));
    }

    /// Drops the entry for `token` (its key left the set or changed).
    pub(crate) fn forget(&self, token: &str) {
        self.entries.remove(token);
    }

    /// The refused-signature entry for exactly these token bytes.
    pub(crate) fn lookup_rejected(&self, token: &str, now: UnixTime) -> Option<Arc<CachedToken>> {
        let (entry, _) = self.rejected.get(token);
        entry.filter(|e| &*e.token == token && now < e.exp)
    }

    /// Remembers that `token`'s signature did not verify with `key`.
    pub(crate) fn reject(
        &self,
        token: &str,
        parsed: Arc<ParsedToken>,
        key: Arc<VerifyingKey>,
        now: UnixTime,
    ) {
        let entry = CachedToken {
            token: token.into(),
            parsed,
            key,
            exp: now + REJECTED_LIFETIME.as_secs_f64(),
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
