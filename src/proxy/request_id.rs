//! A request's `X-Request-Id`, and new values for it: UUID v4-shaped, unique
//! within the process, and cheap. `uuid::Uuid::new_v4()` asks the kernel for
//! 16 random bytes on every call (a `getrandom` system call per request);
//! here the randomness is drawn once per process and every id is a bijective
//! scramble of a counter, so two ids of one process never collide and ids of
//! different processes differ in 58 random bits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};

use crate::policy::headers::sane_request_id;

/// The request id of one request: the client's own when it is a single sane
/// value, else a new one. Held as a header value (visible ASCII only), so the
/// upstream request, the response and a refusal share it without copies.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's `X-Request-Id` when sane, else a new id.
    pub fn for_request(headers: &HeaderMap) -> Self {
        match sane_request_id(headers) {
            Some(value) => RequestId(value.clone()),
            None => RequestId::new(),
        }
    }

    /// A new id.
    pub fn new() -> Self {
        // A UUID is always a valid header value.
        RequestId(HeaderValue::try_from(new_request_id()).unwrap_or(HeaderValue::from_static("-")))
    }

    /// A value already found sane (`sane_request_id`).
    pub fn from_header(value: HeaderValue) -> Self {
        RequestId(value)
    }

    /// A given id (tests, and callers that already hold one).
    pub fn from_static(id: &'static str) -> Self {
        RequestId(HeaderValue::from_static(id))
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII ever gets in (`sane_request_id`, UUIDs).
        self.0.to_str().unwrap_or("-")
    }

    /// The id as a header value (a reference-counted copy).
    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

/// Per-process randomness: a key for the counter scramble and 58 bits that
/// every id of this process carries.
struct Seed {
    key: u64,
    process_bits: u64,
}

fn seed() -> &'static Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    SEED.get_or_init(|| {
        let random = uuid::Uuid::new_v4().as_u128();
        Seed {
            key: random as u64,
            process_bits: (random >> 64) as u64 & ((1 << 58) - 1),
        }
    })
}

/// The splitmix64 finaliser: a bijection of `u64`.
fn scramble(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The UUID (version 4, RFC 4122 variant) for the `n`th id of a process.
/// The 64 scrambled counter bits fill bits 0-61 and 64-65, the process bits
/// fill 66-75 and 80-127; bits 62-63 hold the variant, 76-79 the version.
fn uuid_for(n: u64, seed: &Seed) -> uuid::Uuid {
    let counter = u128::from(scramble(n ^ seed.key));
    let process = u128::from(seed.process_bits);
    let value = (counter & ((1 << 62) - 1))
        | (0b10 << 62)
        | ((counter >> 62) << 64)
        | ((process & 0x3ff) << 66)
        | (0x4 << 76)
        | ((process >> 10) << 80);
    uuid::Uuid::from_u128(value)
}

/// A new request id, e.g. `3f2b8c1e-9d4a-4c71-b2e0-5a6f7d8e9c0b`.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid_for(n, seed())
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        let id = RequestId::for_request(&headers);
        assert_eq!(id.as_str(), "abc-123");
        assert_eq!(id.header(), "abc-123");
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        let id = RequestId::for_request(&headers);
        assert_ne!(id.as_str(), "has space");
        assert_eq!(
            uuid::Uuid::parse_str(id.as_str())
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(id.header(), id.as_str());
    }

    #[test]
    fn ids_are_version_4_uuids() {
        let id = new_request_id();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(id.len(), 36);
        assert_eq!(id, id.to_ascii_lowercase());
    }

    #[test]
    fn ids_of_one_process_are_distinct_and_carry_the_process_bits() {
        let seed = Seed {
            key: 0x0123_4567_89ab_cdef,
            process_bits: 0x2aa_aaaa_aaaa_aaaa,
        };
        let mut seen = HashSet::new();
        for n in 0..50_000u64 {
            let id = uuid_for(n, &seed);
            assert!(seen.insert(id), "id {n} repeated");
            let bits = id.as_u128();
            let process = ((bits >> 66) & 0x3ff) | (((bits >> 80) as u64 as u128) << 10);
            assert_eq!(process as u64, seed.process_bits);
        }
        let other = Seed {
            key: seed.key,
            process_bits: 1,
        };
        assert_ne!(uuid_for(7, &seed), uuid_for(7, &other));
    }
}
