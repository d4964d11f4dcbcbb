//! Network namespaces and veth links for tests that need a real kernel network stack on the far
//! side (stock WireGuard interop, the wireguard-go baseline). Needs root, as CI has.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Runs `ip` (or any command), failing with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| {
        format!(
            "cannot run `{cmd}`; is it installed? (.ci/run installs iproute2 and wireguard-tools)"
        )
    })?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A unique short tag for names in this process (interface names are limited to 15 bytes).
pub fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self> {
        let name = format!("{prefix}-{}", unique_tag());
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> …`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), cmd];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `f` on a new thread whose network namespace is this one; sockets it opens live here.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<Result<T>> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path)?;
            Ok(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Moves the calling thread (only it) into the namespace at `path`.
#[allow(unsafe_code)]
fn enter(path: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
    // SAFETY: setns only reads the descriptor, which stays open for the call; CLONE_NEWNET affects
    // just this thread, which the caller created for the purpose.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns({path}) failed: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A veth pair: `a_addr` on the `a` end (host when `a` is `None`), `b_addr` on the `b` end.
/// Addresses are CIDR strings like `10.77.1.1/24`.
pub fn veth(a: Option<&Netns>, a_addr: &str, b: &Netns, b_addr: &str) -> Result<()> {
    let tag = unique_tag();
    let (ea, eb) = (format!("va{tag}"), format!("vb{tag}"));
    run(
        "ip",
        &["link", "add", &ea, "type", "veth", "peer", "name", &eb],
    )?;
    run("ip", &["link", "set", &eb, "netns", &b.name])?;
    match a {
        Some(ns) => {
            run("ip", &["link", "set", &ea, "netns", &ns.name])?;
            ns.ip(&["addr", "add", a_addr, "dev", &ea])?;
            ns.ip(&["link", "set", &ea, "up"])?;
        }
        None => {
            run("ip", &["addr", "add", a_addr, "dev", &ea])?;
            run("ip", &["link", "set", &ea, "up"])?;
        }
    }
    b.ip(&["addr", "add", b_addr, "dev", &eb])?;
    b.ip(&["link", "set", &eb, "up"])?;
    Ok(())
}
