//! The proxy's only raw system calls: reading a redirected connection's original destination
//! and moving a thread into a network namespace.
//!
//! Both need `getsockopt`/`setns` with C structs that no safe std API offers. They are kept in
//! this one module so the `unsafe` in the proxy can be reviewed in one sitting.
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
