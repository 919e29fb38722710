//! The verified-token cache: a token seen before costs a keyed hash and a lookup.
//!
//! Keyed by a keyed hash of the token, never the token. Each entry names the introspector
//! that accepted it by [`Fingerprint`], so an entry made under a configuration that has
//! since changed (new secret, new `jwks_uri`, other audiences) is never used again.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use siphasher::sip128::{Hasher128, SipHasher24};

use super::{Fingerprint, TokenKind};

/// A token's key in the caches ([`hash`]).
pub type TokenHash = u128;

/// SipHash-2-4 with 128 bits of output, under a key drawn when the process starts: a keyed
/// PRF, so nobody without the key can make a token land on another token's entry, and 128
/// bits keep chance collisions out of reach. The key never leaves the process, and differs
/// per replica and per restart. SHA-256 did the same job for about 30,000 instructions per
/// `Check` on a 600-byte JWT where the CPU has no SHA extensions (valgrind's count,
/// BENCHMARKS.md); this takes about a tenth of that on any CPU.
pub fn hash(token: &str) -> TokenHash {
    static KEY: OnceLock<[u64; 2]> = OnceLock::new();
    let [k0, k1] = *KEY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // No key, no cache: a panic here is a 503 for the request, never an allow.
        getrandom::fill(&mut bytes).expect("the operating system's random numbers");
        let (a, b) = bytes.split_at(8);
        [
            u64::from_le_bytes(a.try_into().expect("8 bytes")),
            u64::from_le_bytes(b.try_into().expect("8 bytes")),
        ]
    });
    let mut h = SipHasher24::new_with_keys(k0, k1);
    std::hash::Hasher::write(&mut h, token.as_bytes());
    h.finish128().as_u128()
}

/// A token verified earlier, as the cache keeps it.
#[derive(Clone)]
pub struct Verified {
    pub introspector: Fingerprint,
    pub kind: TokenKind,
    /// Always a JSON object.
    pub claims: Arc<Value>,
    /// The token's own `exp` (seconds since the epoch).
    pub expires_at: Option<u64>,
    /// When this entry stops being trusted: never after `exp`, never after `cache_ttl`
    /// for answers that came from an identity provider.
    pub cache_until: Instant,
    /// Roughly the bytes the entry holds, for the cache's size bound.
    pub weight: u32,
    /// [`crate::resources::json_weight`] of `claims`.
    pub claims_weight: u32,
}

impl Verified {
    pub fn is_fresh(&self, now: Instant, now_secs: u64) -> bool {
        now < self.cache_until && self.expires_at.is_none_or(|exp| exp > now_secs)
    }
}

/// No entry is kept longer than a day, whatever the token's `exp`.
const MAX_CACHE_SECS: u64 = 86_400;

/// `cache_until` for a token expiring at `exp`, and kept no later than `limit` if given.
pub fn cache_until(exp: Option<u64>, limit: Option<Instant>, now_secs: u64) -> Instant {
    let now = Instant::now();
    // Capped, so that an absurd `exp` cannot overflow the clock arithmetic.
    let by_exp = exp.map(|exp| {
        let left = Duration::from_secs(exp.saturating_sub(now_secs).min(MAX_CACHE_SECS));
        now.checked_add(left).unwrap_or(now)
    });
    match (by_exp, limit) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        // A token without `exp` from a static key: verified again every time.
        (None, None) => now,
    }
}

struct UntilExpiry;

impl moka::Expiry<TokenHash, Verified> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Verified,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.cache_until.saturating_duration_since(created_at))
    }
}

pub type VerifiedCache = moka::future::Cache<TokenHash, Verified>;

pub fn verified_cache(max_bytes: u64) -> VerifiedCache {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_, v: &Verified| v.weight)
        .expire_after(UntilExpiry)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cache_until_is_the_earlier_of_exp_and_limit() {
        let now_secs = 1_000_000;
        let soon = Instant::now() + Duration::from_secs(5);
        let by_exp = cache_until(Some(now_secs + 60), Some(soon), now_secs);
        assert!(by_exp <= soon);
        let by_exp = cache_until(Some(now_secs + 2), Some(soon), now_secs);
        assert!(by_exp < soon);
        // Already expired: not kept at all.
        assert!(cache_until(Some(now_secs - 10), None, now_secs) <= Instant::now());
        assert!(cache_until(None, None, now_secs) <= Instant::now());
    }

    #[test]
    fn token_cache_key_is_a_keyed_hash_not_the_token() {
        let key = hash("secret-token");
        assert_eq!(key, hash("secret-token"));
        assert_ne!(key, hash("secret-token2"));
        // Keyed: not SipHash-2-4 under the all-zero key, which anyone could compute.
        let mut unkeyed = SipHasher24::new_with_keys(0, 0);
        std::hash::Hasher::write(&mut unkeyed, b"secret-token");
        assert_ne!(key, unkeyed.finish128().as_u128());
        // A million distinct tokens, a million distinct keys.
        let keys: std::collections::HashSet<TokenHash> = (0..1_000_000)
            .map(|i| hash(&format!("token-{i}")))
            .collect();
        assert_eq!(keys.len(), 1_000_000);
    }
}
