//! A stable 64-bit hash for consistent hashing. Stable on purpose: every proxy, whatever its
//! build, must put the same key on the same endpoint, so the standard library's hasher (whose
//! algorithm may change between releases) is not used.

/// FNV-1a over `bytes`, started from `seed`, then MurmurHash3's finaliser so that keys
/// differing in one byte land far apart.
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = bytes.iter().fold(OFFSET ^ mix(seed), |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    mix(hash)
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_spreads() {
        assert_eq!(hash_bytes(b"user-1", 0), hash_bytes(b"user-1", 0));
        assert_ne!(hash_bytes(b"user-1", 0), hash_bytes(b"user-2", 0));
        assert_ne!(hash_bytes(b"user-1", 0), hash_bytes(b"user-1", 1));
        // Known value: changing the algorithm would move every user of every proxy.
        assert_eq!(hash_bytes(b"", 0), mix(0xcbf2_9ce4_8422_2325 ^ mix(0)));
        let high_bits = (0..1000u32).filter(|i| hash_bytes(i.to_string().as_bytes(), 0) >> 63 == 1).count();
        assert!((400..600).contains(&high_bits), "{high_bits}");
    }
}
