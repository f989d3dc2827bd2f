//! Network namespaces for data-plane tests: each "pod" is a netns, joined to others by veth
//! pairs, with the same capture rules `mesh-proxy init` installs in a real pod.
//!
//! Names carry the process id and a counter, so parallel test binaries and parallel tests never
//! collide; veth interfaces are created directly inside their namespaces, so their names never
//! meet in the host namespace. Dropping a [`Netns`] deletes it (and its veths), also when a test
//! panics.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Why this machine cannot run namespace tests, if it cannot: not root, `ip` or `iptables`
/// missing, or namespaces not allowed (an unprivileged container).
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if uid != Some("0") {
        return Some("not running as root".into());
    }
    for tool in ["ip", "iptables", "iptables-restore", "setpriv", "bash"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Some(format!("`{tool}` not installed (apt-get install -y iproute2 iptables util-linux)"));
        }
    }
    match Netns::new("probe") {
        Ok(_) => None,
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(out)
}

/// One network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
    handle: File,
}

impl Netns {
    /// Creates `mt-TAG-PID-N` with its loopback up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("mt-{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let handle = match File::open(format!("/var/run/netns/{name}")) {
            Ok(f) => f,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
                return Err(e);
            }
        };
        let ns = Netns { name, handle };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace; fails unless it exits 0.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        run(Command::new("ip").args(["netns", "exec", &self.name]).args(args))
    }

    /// A command to run inside the namespace, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets `f` creates belong to the
    /// namespace and may be returned and used from any thread.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let handle = self.handle.try_clone().expect("dup netns handle");
        std::thread::spawn(move || {
            mesh_proxy::sys::enter_netns(&handle).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Binds a listener inside the namespace.
    pub fn listen(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        let l = self.run(move || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        l
    }

    /// Connects from inside the namespace.
    pub fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let addr: SocketAddr = addr.parse().unwrap();
        self.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Joins two namespaces with a veth pair and gives each end its addresses (CIDR form).
pub fn link(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) -> io::Result<()> {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let (va, vb) = (format!("va{n}"), format!("vb{n}"));
    run(Command::new("ip")
        .args(["link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name]))?;
    for (ns, dev, addrs) in [(a, &va, a_addrs), (b, &vb, b_addrs)] {
        for addr in addrs {
            ns.exec(&["ip", "addr", "add", addr, "dev", dev])?;
        }
        ns.exec(&["ip", "link", "set", dev, "up"])?;
    }
    Ok(())
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
