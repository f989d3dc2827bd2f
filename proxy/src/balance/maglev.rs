//! Maglev hashing (Google's load balancer paper): a lookup table of a prime size where each
//! endpoint fills the slots of its own permutation in turn. A key goes to `table[hash % size]`:
//! one lookup, no search, and when an endpoint leaves only a few keys besides its own move.

use super::hash::hash_bytes;
use crate::routing::endpoint::Endpoint;
use std::sync::Arc;

/// Istio's default table size.
pub const DEFAULT_TABLE_SIZE: u64 = 65537;

#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
}

impl Maglev {
    /// A table of `size` slots (a prime; validation checks it), filled in proportion to weight.
    pub fn new(endpoints: &[Arc<Endpoint>], size: u64) -> Self {
        let size = if size < endpoints.len() as u64 || size < 2 { DEFAULT_TABLE_SIZE } else { size };
        let mut table = vec![u32::MAX; usize::try_from(size).unwrap_or(0)];
        if endpoints.is_empty() {
            return Maglev { table: table.into_boxed_slice() };
        }
        struct Filler {
            offset: u64,
            skip: u64,
            next: u64,
            credit: u64,
        }
        let mut fillers: Vec<Filler> = endpoints
            .iter()
            .map(|e| {
                let name = e.address.to_string();
                let offset = hash_bytes(name.as_bytes(), 0) % size;
                let skip = hash_bytes(name.as_bytes(), 1) % (size - 1) + 1;
                Filler { offset, skip, next: 0, credit: 0 }
            })
            .collect();
        let max_weight = u64::from(endpoints.iter().map(|e| e.weight).max().unwrap_or(1));
        let mut filled = 0;
        while filled < table.len() {
            for (index, (filler, endpoint)) in fillers.iter_mut().zip(endpoints).enumerate() {
                // An endpoint of weight w/max takes a slot in w of every max rounds.
                filler.credit += u64::from(endpoint.weight);
                if filler.credit < max_weight {
                    continue;
                }
                filler.credit -= max_weight;
                let slot = loop {
                    let slot = (filler.offset + filler.next * filler.skip) % size;
                    filler.next += 1;
                    if table[slot as usize] == u32::MAX {
                        break slot as usize;
                    }
                };
                table[slot] = u32::try_from(index).unwrap_or(0);
                filled += 1;
                if filled == table.len() {
                    break;
                }
            }
        }
        Maglev { table: table.into_boxed_slice() }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Endpoint indexes from the key's slot on: the first is the key's endpoint, the next ones
    /// stand in while it is ejected.
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let len = self.table.len();
        let start = (hash % len as u64) as usize;
        (0..len).map(move |i| self.table[(start + i) % len] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{endpoints, moved_share};

    #[test]
    fn slots_follow_weights() {
        let table = Maglev::new(&endpoints(&[2, 1, 1]), 65537);
        let share = |i: u32| table.table.iter().filter(|e| **e == i).count() as f64 / 65537.0;
        assert!((share(0) - 0.5).abs() < 0.01 && (share(1) - 0.25).abs() < 0.01, "{} {}", share(0), share(1));
        let small = Maglev::new(&endpoints(&[1; 3]), 7);
        assert!(small.table.iter().all(|e| *e < 3));
    }

    #[test]
    fn when_one_of_five_endpoints_leaves_about_a_fifth_of_keys_move() {
        let all = endpoints(&[1; 5]);
        let before = Maglev::new(&all, DEFAULT_TABLE_SIZE);
        let after = Maglev::new(&all[..4], DEFAULT_TABLE_SIZE);
        let (moved, of_survivors) = moved_share(&all, |h| before.walk(h).next(), |h| after.walk(h).next());
        // Maglev gives each endpoint an equal share within a slot, so the leaving one held 1/5;
        // its refill disturbs a few percent of the others' keys (the paper measures ~1-3%).
        assert!((0.18..0.26).contains(&moved), "moved {moved}");
        assert!(of_survivors < 0.05, "keys of endpoints that stayed: {of_survivors}");
    }
}
