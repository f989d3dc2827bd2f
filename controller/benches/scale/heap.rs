//! A counting allocator: the bytes the controller side holds live on the heap, beside what the
//! kernel reports as resident, so a figure can be split into what is in use and what the
//! allocator keeps after a peak.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BUCKETS: [AtomicUsize; 24] = [const { AtomicUsize::new(0) }; 24];
static EXACT: [AtomicUsize; 2048] = [const { AtomicUsize::new(0) }; 2048];

fn exact(size: usize) -> Option<&'static AtomicUsize> {
    (64..64 + 2048 * 64).contains(&size).then(|| &EXACT[(size - 64) / 64])
}

fn bucket(size: usize) -> usize {
    (usize::BITS - size.max(1).leading_zeros()).min(23) as usize
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counters are plain atomics and never touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's `layout` is passed on as given.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
            BUCKETS[bucket(layout.size())].fetch_add(layout.size(), Ordering::Relaxed);
            if let Some(slot) = exact(layout.size()) {
                slot.fetch_add(1, Ordering::Relaxed);
            }
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this `layout` (the caller's promise).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        BUCKETS[bucket(layout.size())].fetch_sub(layout.size(), Ordering::Relaxed);
        if let Some(slot) = exact(layout.size()) {
            slot.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Live and peak heap bytes, in MB.
pub fn heap() -> (f64, f64) {
    (LIVE.load(Ordering::Relaxed) as f64 / 1048576.0, PEAK.load(Ordering::Relaxed) as f64 / 1048576.0)
}

/// Live bytes by allocation size (powers of two), in MB, for the larger buckets.
pub fn by_size() -> String {
    BUCKETS
        .iter()
        .enumerate()
        .map(|(i, b)| (i, b.load(Ordering::Relaxed) as f64 / 1048576.0))
        .filter(|(_, mb)| *mb >= 1.0)
        .map(|(i, mb)| format!("<{}B:{mb:.1}", 1usize << i))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sizes (to 64 bytes) of the allocations of 4 KB or more holding the most bytes.
pub fn top() -> String {
    let mut sizes: Vec<(usize, usize)> = EXACT
        .iter()
        .enumerate()
        .map(|(i, n)| (64 + i * 64, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    sizes.sort_by_key(|(size, n)| std::cmp::Reverse(size * n));
    sizes.iter().take(16).map(|(size, n)| format!("{n}x{size}")).collect::<Vec<_>>().join(" ")
}
