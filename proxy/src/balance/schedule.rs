//! The order in which ROUND_ROBIN (and LEAST_REQUEST's first candidate) visit endpoints:
//! built once per config so that a pick is one atomic add and one index.

/// Endpoint indexes in turn, each as often as its weight says.
#[derive(Debug)]
pub struct Schedule {
    endpoints: usize,
    /// `None` when every weight is equal: then the turn is the index itself.
    order: Option<Box<[u32]>>,
}

/// A longer schedule is scaled down: weights keep their proportions within 1/65536.
const MAX_LEN: u64 = 1 << 16;

impl Schedule {
    /// A smooth weighted round robin (each endpoint's turns spread out, not bunched) over
    /// endpoints with these weights.
    pub fn new(weights: &[u32]) -> Self {
        let endpoints = weights.len();
        let first = weights.first().copied().unwrap_or(1);
        if weights.iter().all(|w| *w == first) {
            return Schedule { endpoints, order: None };
        }
        let weights = reduced(weights);
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        let mut current = vec![0i64; endpoints];
        let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += i64::from(*w);
            }
            let (best, _) =
                current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i))).unwrap_or((0, &0));
            current[best] -= total;
            order.push(u32::try_from(best).unwrap_or(0));
        }
        Schedule { endpoints, order: Some(order.into_boxed_slice()) }
    }

    /// How many turns before the schedule repeats.
    pub fn len(&self) -> usize {
        self.order.as_ref().map_or(self.endpoints, |o| o.len())
    }

    /// The endpoint whose turn `position` is (any position; it wraps).
    pub fn at(&self, position: usize) -> usize {
        match &self.order {
            None => position % self.endpoints.max(1),
            Some(order) => order[position % order.len()] as usize,
        }
    }
}

/// Weights divided by their common divisor and, if their sum is still over [`MAX_LEN`],
/// scaled down (each at least 1).
fn reduced(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<u64> = weights.iter().map(|w| u64::from(*w / divisor)).collect();
    let total: u64 = weights.iter().sum();
    weights
        .iter()
        .map(|w| if total > MAX_LEN { (w * MAX_LEN / total).max(1) } else { *w })
        .map(|w| u32::try_from(w).unwrap_or(u32::MAX))
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(schedule: &Schedule, n: usize) -> Vec<usize> {
        (0..n).map(|i| schedule.at(i)).collect()
    }

    #[test]
    fn equal_weights_take_turns_in_order() {
        let s = Schedule::new(&[1, 1, 1]);
        assert_eq!(turns(&s, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_give_proportional_and_spread_out_turns() {
        let s = Schedule::new(&[20, 10, 10]);
        assert_eq!(s.len(), 4, "weights are reduced by their common divisor");
        assert_eq!(turns(&s, 4), [0, 1, 2, 0], "smooth: the heavy endpoint's turns are not adjacent");
        let s = Schedule::new(&[u32::MAX, 1]);
        assert!(s.len() as u64 <= MAX_LEN + 1);
        assert_eq!(turns(&s, s.len()).iter().filter(|i| **i == 1).count(), 1);
    }
}
