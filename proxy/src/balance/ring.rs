//! Ring hash (Ketama): each endpoint owns points on a ring of 64-bit hashes; a key goes to
//! the first point at or after its hash.
//!
//! Each endpoint gets `weight × per_unit` points, where `per_unit` is the smallest power of
//! two that makes the ring at least `minimumRingSize`. Envoy scales points to the ring size
//! exactly, so adding or removing one endpoint changes every other endpoint's points and moves
//! keys between endpoints that stayed; with a power of two, the other endpoints keep exactly
//! their points (unless the count crosses a power of two), and only the keys of the endpoint
//! that left move.

use super::hash::{hash_bytes, mix};
use crate::routing::endpoint::Endpoint;
use std::sync::Arc;

/// Envoy's largest ring.
const MAX_POINTS: u64 = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Box<[(u64, u32)]>,
}

impl Ring {
    pub fn new(endpoints: &[Arc<Endpoint>], minimum_size: u64) -> Self {
        let total_weight: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum::<u64>().max(1);
        let mut per_unit = minimum_size.max(1).div_ceil(total_weight).next_power_of_two();
        while per_unit > 1 && per_unit * total_weight > MAX_POINTS {
            per_unit /= 2;
        }
        let mut points = Vec::with_capacity(usize::try_from(per_unit * total_weight).unwrap_or(0));
        for (index, endpoint) in endpoints.iter().enumerate() {
            let base = hash_bytes(endpoint.address.to_string().as_bytes(), 0);
            for n in 0..per_unit * u64::from(endpoint.weight) {
                points.push((mix(base ^ mix(n)), u32::try_from(index).unwrap_or(u32::MAX)));
            }
        }
        points.sort_unstable();
        Ring { points: points.into_boxed_slice() }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Endpoint indexes from the key's point on, clockwise: the first is the key's endpoint;
    /// the next ones are where its keys would go if it were gone.
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(point, _)| *point < hash);
        let len = self.points.len();
        (0..len).map(move |i| self.points[(start + i) % len].1 as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{endpoints, moved_share};

    #[test]
    fn a_ring_is_at_least_its_minimum_size_and_weights_own_more_points() {
        let ring = Ring::new(&endpoints(&[1, 1, 1]), 1024);
        assert!(ring.len() >= 1024 && ring.len() < 2048, "{}", ring.len());
        let ring = Ring::new(&endpoints(&[3, 1]), 1000);
        let heavy = ring.points.iter().filter(|(_, i)| *i == 0).count();
        assert_eq!(heavy, 3 * ring.len() / 4);
    }

    #[test]
    fn when_one_of_five_endpoints_leaves_only_its_keys_move() {
        let all = endpoints(&[1; 5]);
        let before = Ring::new(&all, 1024);
        let after = Ring::new(&all[..4], 1024);
        let (moved, of_survivors) = moved_share(&all, |h| before.walk(h).next(), |h| after.walk(h).next());
        // The leaving endpoint held about a fifth of the keys (±35% for 1280 random points).
        assert!((0.13..0.27).contains(&moved), "moved {moved}");
        assert_eq!(of_survivors, 0.0, "keys of endpoints that stayed do not move");
    }
}
