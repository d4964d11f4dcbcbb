//! Processes by `/proc`: a browser's whole tree (its process group, everything below it by parent
//! links, and what it started that left both, such as Chromium's double-forked crashpad handlers,
//! which the agent inherits as subreaper), killing and reaping it. Everything here reads `/proc`
//! or waits, so async code calls it through `spawn_blocking`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The fields of `/proc/PID/stat` used here.
#[derive(Debug, Clone, Copy)]
struct Stat {
    state: char,
    ppid: i32,
    pgid: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces and parentheses: the fields start after the last ')'
    let (_, rest) = s.rsplit_once(')')?;
    let mut f = rest.split_whitespace();
    Some(Stat {
        state: f.next()?.chars().next()?,
        ppid: f.next()?.parse().ok()?,
        pgid: f.next()?.parse().ok()?,
    })
}

/// Every process now, with its stat.
fn all() -> HashMap<i32, Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// Processes in a process group (Chromium and every helper it started in it).
pub fn group_members(pgid: i32) -> Vec<i32> {
    all()
        .into_iter()
        .filter(|(_, s)| s.pgid == pgid)
        .map(|(pid, _)| pid)
        .collect()
}

/// Every process below `root` by `/proc` parent links (not `root` itself), zombies included.
pub fn descendants(root: i32) -> Vec<i32> {
    descendants_in(&all(), root).into_iter().collect()
}

fn descendants_in(procs: &HashMap<i32, Stat>, root: i32) -> BTreeSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, s) in procs {
        children.entry(s.ppid).or_default().push(pid);
    }
    let mut found = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if found.insert(c) {
                todo.push(c);
            }
        }
    }
    found
}

/// Whether `pid` runs with `marker` (`KEY=value`) in its environment.
fn has_env(pid: i32, marker: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == marker))
}

/// A browser's processes: its group, everything below its main process, and every descendant of
/// this process that carries `marker` in its environment (what the browser started that left its
/// group and was reparented here).
pub fn browser_tree(pid: i32, marker: &[u8]) -> BTreeSet<i32> {
    let procs = all();
    let mut tree = descendants_in(&procs, pid);
    tree.insert(pid);
    tree.extend(procs.iter().filter(|(_, s)| s.pgid == pid).map(|(&p, _)| p));
    let me = std::process::id() as i32;
    tree.extend(
        descendants_in(&procs, me)
            .into_iter()
            .filter(|&p| has_env(p, marker)),
    );
    tree
}

/// Resident memory of `pids` together, in bytes.
pub fn rss(pids: impl IntoIterator<Item = i32>) -> u64 {
    pids.into_iter()
        .filter_map(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            s.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * 4096
}

/// SIGKILLs `pids` (and the group `pgid`), then reaps until none of them is left or 5 s passed.
/// Helpers reparent to us (we are a subreaper) only once their parent is gone, so it keeps reaping
/// until they have all disappeared, not merely until `waitpid` runs out of children.
#[allow(unsafe_code)]
pub fn kill_and_reap(pgid: i32, pids: &BTreeSet<i32>) {
    // SAFETY: plain kill syscalls on processes this agent started; no memory is shared.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
        for &p in pids {
            libc::kill(p, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        reap_orphans();
        let left = pids.iter().any(|&p| stat(p).is_some()) || !group_members(pgid).is_empty();
        if !left || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs and reaps every process below this one: on shutdown, whatever the browser left.
pub fn kill_descendants() {
    let me = std::process::id() as i32;
    let left: BTreeSet<i32> = descendants(me).into_iter().collect();
    if left.is_empty() {
        return;
    }
    tracing::warn!(pids = ?left, "killing processes left behind at shutdown");
    for &p in &left {
        // SAFETY: SIGKILL to our own descendants; no memory involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while left.iter().any(|&p| stat(p).is_some()) && Instant::now() < deadline {
        reap_orphans();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reaps every zombie child of ours: Chromium helpers that were reparented here.
#[allow(unsafe_code)]
pub fn reap_orphans() {
    let me = std::process::id() as i32;
    for (pid, s) in all() {
        if s.state == 'Z' && s.ppid == me {
            let mut status = 0;
            // SAFETY: waitpid on a specific zombie child of ours; only writes `status`.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        }
    }
}
