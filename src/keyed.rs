//! Keyed 128-bit hashes: SipHash-2-4 under a key drawn when the process starts. A keyed
//! PRF, so nobody without the key can make one input land on another's entry, and 128
//! bits keep chance collisions out of reach; the caches that hand out a verified token or
//! a User by such a key rely on both. The key never leaves the process, and differs per
//! replica and per restart.

use std::sync::OnceLock;

use siphasher::sip128::{Hasher128, SipHasher24};

/// A hasher under the process's key; `finish128` gives the key of what was written.
pub fn hasher() -> SipHasher24 {
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
    SipHasher24::new_with_keys(k0, k1)
}

/// The keyed hash of `bytes`.
pub fn hash(bytes: &[u8]) -> u128 {
    let mut h = hasher();
    std::hash::Hasher::write(&mut h, bytes);
    h.finish128().as_u128()
}
