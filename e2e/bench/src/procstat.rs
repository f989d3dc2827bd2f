//! What a process costs, read from `/proc`: CPU time and resident memory, summed over the
//! process and its descendants (nginx works in a child of its master process).

use anyhow::Context;
use std::fs;

/// CPU time and memory of a process tree at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// The user part of `cpu_seconds`: the process's own code. The rest is the kernel working
    /// for it (system calls, the TCP stack of the sockets it writes to).
    pub user_seconds: f64,
    /// Resident memory now, in KiB.
    pub rss_kib: u64,
    /// The largest resident memory so far (`VmHWM`), in KiB, summed over the tree.
    pub peak_rss_kib: u64,
    /// Resident memory of the process's own (anonymous) pages now (`RssAnon`), in KiB: heap,
    /// stacks. The rest of the resident memory is file pages (the executable and libraries),
    /// which every process running the same binary shares through the page cache.
    pub anon_rss_kib: u64,
}

/// Clock ticks per second of `/proc/*/stat` times; 100 on every Linux this runs on, but asked.
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = text.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_string).collect())
}

/// Every live process whose parent chain leads to `root`, `root` included.
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            // Field 4 of stat is the parent pid; after the name it is index 1.
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok())) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        members.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    members
}

fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The usage of `root` and its descendants now.
pub fn usage(root: u32) -> anyhow::Result<Usage> {
    let ticks = ticks_per_second();
    let mut total = Usage::default();
    for pid in tree(root) {
        let fields = stat_fields(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
        // utime and stime are fields 14 and 15 of stat: indices 11 and 12 after the name.
        let field = |i: usize| fields.get(i).and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
        total.cpu_seconds += (field(11) + field(12)) / ticks;
        total.user_seconds += field(11) / ticks;
        total.rss_kib += status_kib(pid, "VmRSS:");
        total.peak_rss_kib += status_kib(pid, "VmHWM:");
        total.anon_rss_kib += status_kib(pid, "RssAnon:");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_memory_and_cpu() {
        let burn: u64 = (0..5_000_000u64).fold(0, |acc, x| acc.wrapping_add(x * x));
        assert_ne!(burn, 1);
        let me = usage(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib, "{me:?}");
        assert!(me.cpu_seconds >= me.user_seconds && me.user_seconds >= 0.0, "{me:?}");
    }
}
