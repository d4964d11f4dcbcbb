//! The demo's agent processes: spawned with the parent-death signal set (so a demo killed
//! without cleanup leaves no agent behind, and each agent takes its Chromium with it), logged to
//! files, stopped with SIGTERM and then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long an agent may take to leave, stop Chromium and exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A child process that dies with the demo.
#[derive(Debug)]
pub struct Agent {
    pub region: String,
    pub log: PathBuf,
    child: Child,
}

impl Agent {
    /// Starts `program args`, its output into `log`.
    pub fn spawn(region: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Agent> {
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env("RUST_LOG", "warn");
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Agent {
            region: region.into(),
            log,
            child,
        })
    }

    /// Whether it exited on its own, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after the grace period; always reaps.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(unsafe_code)]
fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child this process spawned and has not reaped
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child being set up
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Stops every agent at once (each gets its grace period in parallel).
pub fn stop_all(agents: &mut [Agent]) {
    for a in agents.iter() {
        if a.child.id() != 0 {
            signal(a.child.id(), libc::SIGTERM);
        }
    }
    for a in agents.iter_mut() {
        a.stop();
    }
}
