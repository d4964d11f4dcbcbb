//! Whether Chromium can run with its sandbox, decided once at start-up. Chromium's Linux sandbox
//! (without the setuid helper) needs an unprivileged user that may create user namespaces, and
//! Chromium refuses to run as root without `--no-sandbox`. So a root agent starts it as a
//! configured user (`--chromium-user`), a non-root agent as itself, and the probe checks that this
//! user can create a user namespace. Only when that cannot work is the sandbox turned off, and the
//! agent says so in its log, its tags and `/healthz`.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// How Chromium is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// Sandboxed, as `user` (`uid`/`gid`); `switch` when the agent must change to that user.
    On {
        user: String,
        uid: u32,
        gid: u32,
        switch: bool,
    },
    /// `--no-sandbox`, and why.
    Off { reason: String },
}

impl Sandbox {
    /// The tag and `/healthz` value: `on` or `off: <reason>`.
    pub fn describe(&self) -> String {
        match self {
            Sandbox::On { user, .. } => format!("on (as {user})"),
            Sandbox::Off { reason } => format!("off: {reason}"),
        }
    }

    pub fn is_on(&self) -> bool {
        matches!(self, Sandbox::On { .. })
    }
}

/// Decides how to run Chromium: as `user` when the agent is root (required then for a sandbox),
/// as the agent itself otherwise; sandboxed when that user can create a user namespace.
pub fn probe(user: Option<&str>) -> Sandbox {
    let off = |reason: String| Sandbox::Off { reason };
    #[allow(unsafe_code)]
    // SAFETY: geteuid/getegid take no arguments and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (name, uid, gid, switch) = match (euid, user) {
        (0, None) => {
            return off(
                "the agent runs as root and no --chromium-user is set; Chromium's sandbox cannot run as root".into(),
            )
        }
        (0, Some(name)) => match lookup_user(name) {
            Ok((uid, gid)) if uid != 0 => (name.to_owned(), uid, gid, true),
            Ok(_) => return off(format!("--chromium-user {name} is root")),
            Err(e) => return off(e),
        },
        (uid, _) => (format!("uid {uid}"), uid, egid, false),
    };
    match can_unshare_user(uid, gid, switch) {
        Ok(()) => Sandbox::On {
            user: name,
            uid,
            gid,
            switch,
        },
        Err(e) => off(format!(
            "{name} cannot create a user namespace ({e}); the kernel or its policy forbids it"
        )),
    }
}

/// The uid and primary gid of `name`.
#[allow(unsafe_code)]
fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let c = CString::new(name).map_err(|_| format!("--chromium-user {name:?} holds a NUL byte"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the size passed; the answer lives in `buf`,
    // and only its integer fields are read.
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(format!(
            "--chromium-user {name}: no such user (create it, e.g. useradd --system {name})"
        ));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

/// Whether a process running as `uid`/`gid` can create a user namespace, tried for real.
fn can_unshare_user(uid: u32, gid: u32, switch: bool) -> Result<(), String> {
    let mut cmd = Command::new("/bin/true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if switch {
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: runs in the forked child (after the uid change) and makes one syscall.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the probe exited with {s}")),
        Err(e) => Err(e.to_string()),
    }
}
