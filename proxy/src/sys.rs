//! The proxy's only raw system calls: reading a redirected connection's original destination,
//! moving a thread into a network namespace, and paging advice for its own executable.
//!
//! They need `getsockopt`/`setns`/`madvise` with C structs or raw addresses that no safe std
//! API offers. They are kept in this one module so the `unsafe` in the proxy can be reviewed
//! in one sitting.
#![allow(unsafe_code)]

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

/// The destination a connection had before iptables REDIRECT rewrote it to our listener.
///
/// Conntrack keeps the original tuple; `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST`
/// (IPv6) read it. `is_ipv6` is the family of the accepted socket (its local address).
pub fn original_dst(socket: &impl AsFd, is_ipv6: bool) -> io::Result<SocketAddr> {
    let fd = socket.as_fd().as_raw_fd();
    if is_ipv6 {
        let mut addr = MaybeUninit::<libc::sockaddr_in6>::zeroed();
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: `fd` is a live socket borrowed for the duration of the call; `addr` points to
        // writable memory of `len` bytes, and the kernel writes at most `len` bytes and updates
        // `len`. A zeroed sockaddr_in6 is a valid value, so reading it is sound whatever the
        // kernel wrote.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_IPV6, libc::IP6T_SO_ORIGINAL_DST, addr.as_mut_ptr().cast(), &mut len)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zero-initialised above and possibly overwritten by the kernel: always initialised.
        let addr = unsafe { addr.assume_init() };
        let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
        let port = u16::from_be(addr.sin6_port);
        Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, addr.sin6_flowinfo, addr.sin6_scope_id)))
    } else {
        let mut addr = MaybeUninit::<libc::sockaddr_in>::zeroed();
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: as above, with a sockaddr_in-sized buffer.
        let rc =
            unsafe { libc::getsockopt(fd, libc::SOL_IP, libc::SO_ORIGINAL_DST, addr.as_mut_ptr().cast(), &mut len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zero-initialised above and possibly overwritten by the kernel: always initialised.
        let addr = unsafe { addr.assume_init() };
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(addr.sin_port))))
    }
}

/// Moves the calling thread (only this thread) into the network namespace `ns`, e.g. an open
/// `/var/run/netns/NAME`. Sockets the thread creates afterwards belong to that namespace and
/// stay there whichever thread later uses them; tests and the node agent rely on that.
pub fn enter_netns(ns: &impl AsFd) -> io::Result<()> {
    // SAFETY: `setns` takes a file descriptor and a flag and touches no memory of ours; the fd
    // is borrowed and stays open for the call. Changing the namespace of this thread cannot
    // break Rust invariants: it only affects which namespace later sockets are created in.
    let rc = unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to map the proxy's executable page by page as code runs (`MADV_RANDOM`),
/// instead of mapping each page's neighbours along with it ("fault-around", 64 KiB at a time),
/// so pages the proxy never runs are never part of its resident memory. The cost is a few
/// thousand more minor page faults while it warms up. Returns how many mappings were advised.
pub fn map_own_code_on_demand() -> io::Result<usize> {
    advise_own_code(libc::MADV_RANDOM)
}

/// Gives back the pages of the proxy's executable that only start-up ran (`MADV_PAGEOUT`):
/// parsing the command line, YAML and Kubernetes objects, building the first tables. The
/// kernel unmaps the executable's pages this process alone maps (pages shared with other
/// processes running the same binary stay), and the data path maps back, page by page, the
/// code it runs. Without this, code that ran once at start stays resident for the life of the
/// sidecar; the kernel would reclaim it only under memory pressure. Linux pages out a file's
/// pages only for a process that owns the file or may write it: `Dockerfile.proxy` installs the
/// binary owned by the proxy's UID for that reason; elsewhere the advice is a no-op.
pub fn page_out_own_code() -> io::Result<usize> {
    advise_own_code(libc::MADV_PAGEOUT)
}

/// Applies `advice` to every read-only mapping of this process's own executable.
fn advise_own_code(advice: libc::c_int) -> io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0;
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, perms, _, _, _, path] = fields[..] else { continue };
        if std::path::Path::new(path) != exe || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: [start, end) is a whole read-only, file-backed mapping of this process's own
        // executable, page-aligned as /proc/self/maps reports it. MADV_RANDOM and MADV_PAGEOUT
        // only change how the kernel pages that mapping in and out: its contents and
        // protection stay, and a page given back is read again from the file on next use, so
        // no Rust reference into it (code or read-only data) is affected.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        advised += 1;
    }
    Ok(advised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_executable_takes_both_kinds_of_paging_advice() {
        assert!(map_own_code_on_demand().unwrap() > 0, "the test binary's read-only mappings were found");
        assert!(page_out_own_code().unwrap() > 0);
        // Code paged out is read back on use: this test still runs, and runs this.
        assert_eq!(std::hint::black_box(2) + 2, 4);
    }
}
