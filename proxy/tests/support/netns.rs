//! Network namespaces for the data-plane tests: the shared `netns` crate (the same one the local
//! cluster's node agent builds pods with), plus what only these tests need: running code on a
//! thread inside a namespace, which takes `setns` from the proxy's `sys` module (the crate that
//! holds our one audited `unsafe`).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

// Every test binary compiles this module; only the namespace tests use these.
#[allow(unused_imports)]
pub use ::netns::{Netns, link, skip_unless_available};

/// What tests do inside a namespace beyond running commands there.
pub trait Inside {
    /// Runs `f` on a thread that has entered the namespace. Sockets `f` creates belong to the
    /// namespace and may be returned and used from any thread.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T;

    /// Binds a non-blocking listener inside the namespace.
    fn listen(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        let l = self.run(move || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        l
    }

    /// A command run inside the namespace as the proxy's UID and GID (1337), which the capture
    /// rules never redirect; `args` may start with further `setpriv` options.
    fn as_proxy_uid(&self, args: &[&str]) -> std::process::Command;

    /// Connects from inside the namespace.
    fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let addr: SocketAddr = addr.parse().unwrap();
        self.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
    }
}

impl Inside for Netns {
    fn as_proxy_uid(&self, args: &[&str]) -> std::process::Command {
        let mut argv = vec!["setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups"];
        argv.extend_from_slice(args);
        self.command(&argv)
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let handle = self.handle().try_clone().expect("dup netns handle");
        std::thread::spawn(move || {
            mesh_proxy::sys::enter_netns(&handle).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

/// Waits (bounded) for a connection on a non-blocking listener.
pub fn accept_within(l: &TcpListener, limit: Duration) -> Option<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).unwrap();
                return Some((s, peer));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
}

/// True when nothing is waiting on a non-blocking listener right now.
pub fn nothing_pending(l: &TcpListener) -> bool {
    matches!(l.accept(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
