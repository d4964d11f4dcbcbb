//! The Chromium supervisor with real Chromium (Debian's `chromium`, or `CHROME`): crash recovery,
//! recycling without process growth, and a clean stop. Every check of "no leftovers" reads /proc.

mod common;

use std::time::Duration;

use vantage_agent::chromium::{
    browser_version, group_members, BrowserState, ChromiumConfig, Supervisor,
};

fn config() -> ChromiumConfig {
    ChromiumConfig {
        health_interval: Duration::from_millis(200),
        ..common::chromium()
    }
}

fn pid_of(s: &BrowserState) -> i32 {
    match s {
        BrowserState::Ready { pid, .. } => *pid as i32,
        other => panic!("not ready: {other:?}"),
    }
}

/// Zombie children of this process that persist (another test's supervisor in this process may
/// have a zombie for a moment until its next health tick reaps it).
async fn lasting_zombies() -> Vec<i32> {
    let mut z = zombie_children();
    for _ in 0..30 {
        if z.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = zombie_children();
        z.retain(|p| now.contains(p));
    }
    z
}

/// Children of this test process that are zombies.
fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(me)
        })
        .collect()
}

/// The group's size once it stops changing (helpers start for a while after DevTools answers).
async fn settled_size(pgid: i32) -> usize {
    let mut last = usize::MAX;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = group_members(pgid).len();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

async fn settle_gone(pgid: i32) -> Vec<i32> {
    for _ in 0..50 {
        let left = group_members(pgid);
        if left.is_empty() {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    group_members(pgid)
}

#[allow(unsafe_code)]
fn sigkill(pid: i32) {
    // SAFETY: kill(2) on a pid this test read from the supervisor; no memory involved.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_is_recovered_and_leaves_nothing_behind() {
    let sup = Supervisor::spawn(config());
    let port = sup.ready(Duration::from_secs(60)).await.unwrap();
    let first = pid_of(&sup.state());
    assert!(
        browser_version(port).await.unwrap().contains("Chrome"),
        "a real browser answers /json/version"
    );
    assert!(
        group_members(first).len() > 1,
        "chromium runs helpers in its group"
    );
    let mut states = sup.watch();
    sigkill(first);
    let restarting = tokio::time::timeout(
        Duration::from_secs(10),
        states.wait_for(|s| matches!(s, BrowserState::Restarting { .. })),
    )
    .await
    .expect("no restarting state within 10 s")
    .unwrap()
    .clone();
    println!("after SIGKILL: {restarting:?}");
    let port = sup.ready(Duration::from_secs(60)).await.unwrap();
    let second = pid_of(&sup.state());
    assert_ne!(first, second);
    browser_version(port).await.unwrap();
    assert_eq!(
        settle_gone(first).await,
        Vec::<i32>::new(),
        "processes of the killed browser survive"
    );
    assert_eq!(
        lasting_zombies().await,
        Vec::<i32>::new(),
        "defunct children left behind"
    );
    sup.stop().await;
    assert_eq!(
        settle_gone(second).await,
        Vec::<i32>::new(),
        "stop left browser processes"
    );
    assert_eq!(lasting_zombies().await, Vec::<i32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_every_20_jobs_does_not_grow_the_process_count() {
    let sup = Supervisor::spawn(ChromiumConfig {
        recycle_after_jobs: 20,
        ..config()
    });
    sup.ready(Duration::from_secs(60)).await.unwrap();
    let mut pids = vec![pid_of(&sup.state())];
    let mut sizes = Vec::new();
    for round in 0..5 {
        let before = pid_of(&sup.state());
        sizes.push(settled_size(before).await);
        for _ in 0..20 {
            sup.job_done();
        }
        let mut w = sup.watch();
        tokio::time::timeout(
            Duration::from_secs(60),
            w.wait_for(|s| matches!(s, BrowserState::Ready { pid, .. } if *pid as i32 != before)),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: no recycled browser within 60 s"))
        .unwrap();
        pids.push(pid_of(&sup.state()));
        assert_eq!(
            settle_gone(before).await,
            Vec::<i32>::new(),
            "round {round}: the recycled browser lingers"
        );
    }
    println!("browser pids {pids:?}, group sizes {sizes:?}");
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(
        max - min <= 2,
        "process count grew across recycles: {sizes:?}"
    );
    assert_eq!(lasting_zombies().await, Vec::<i32>::new());
    sup.stop().await;
}

#[test]
fn a_dropped_supervisor_takes_its_browser_with_it() {
    // a panicking test or agent drops its runtime without calling stop(); no browser may survive
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pid = rt.block_on(async {
        let sup = Supervisor::spawn(config());
        sup.ready(Duration::from_secs(60)).await.unwrap();
        pid_of(&sup.state())
    });
    assert!(!group_members(pid).is_empty());
    drop(rt);
    let mut left = group_members(pid);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = group_members(pid);
    }
    assert!(
        left.is_empty(),
        "browser processes outlived their supervisor: {left:?}"
    );
}

/// The user namespace of `pid`, as `/proc/PID/ns/user` names it.
fn user_ns(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .unwrap()
        .display()
        .to_string()
}

/// The niceness of `pid` (field 19 of `/proc/PID/stat`, counted after the command's parenthesis).
fn niceness(pid: i32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(16).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_sandboxed_as_an_unprivileged_user_and_yields_the_cpu() {
    // not the default, so the setting is seen to reach the browser
    let nice = 7;
    assert_ne!(nice, vantage_agent::chromium::DEFAULT_NICE);
    let sup = common::ready(ChromiumConfig { nice, ..config() }).await;
    let sandbox = sup.sandbox().clone();
    let vantage_agent::sandbox::Sandbox::On { uid, .. } = sandbox else {
        panic!("this machine allows the sandbox, but it is off: {sandbox:?}");
    };
    assert_ne!(uid, 0);
    let BrowserState::Ready { pid, .. } = sup.state() else {
        panic!("not ready")
    };
    let cmdline =
        |p: i32| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
    assert!(
        !cmdline(pid as i32).contains("--no-sandbox"),
        "{}",
        cmdline(pid as i32)
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap();
    assert_eq!(
        real_uid,
        uid.to_string(),
        "the browser runs as the sandbox user"
    );
    // the renderers live in a user namespace of their own: the namespace sandbox is on
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let renderers = loop {
        let r: Vec<i32> = vantage_agent::procs::descendants(pid as i32)
            .into_iter()
            .filter(|&p| cmdline(p).contains("--type=renderer"))
            .collect();
        if !r.is_empty() || std::time::Instant::now() > end {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!renderers.is_empty(), "no renderer started within 30 s");
    let mine = user_ns("self");
    // the browser and its renderers yield the CPU to the agent, which carries their traffic
    assert_eq!(
        niceness(pid as i32),
        i64::from(nice),
        "the browser's niceness"
    );
    for &r in &renderers {
        assert_eq!(niceness(r), i64::from(nice), "renderer {r}'s niceness");
    }
    for r in renderers {
        assert_ne!(
            user_ns(&r.to_string()),
            mine,
            "renderer {r} shares the agent's user namespace"
        );
    }
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_a_recycles_drain_does_not_wait_for_the_running_job() {
    let sup = common::ready(ChromiumConfig {
        recycle_after_jobs: 1,
        ..config()
    })
    .await;
    let pid = pid_of(&sup.state());
    // a job still holds the browser when another one's end sends it off to be recycled
    let lease = sup.lease();
    sup.job_done();
    assert!(matches!(sup.state(), BrowserState::Restarting { .. }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !group_members(pid).is_empty(),
        "the recycle waits for the lease"
    );
    tokio::time::timeout(Duration::from_secs(30), sup.stop())
        .await
        .expect("stop is taken during the recycle's drain (which waits up to 600 s)");
    assert!(group_members(pid).is_empty(), "the browser is gone");
    drop(lease);
}

#[test]
fn a_browser_tree_includes_helpers_that_left_its_group_and_its_parentage() {
    use std::os::unix::process::CommandExt;
    // like Chromium's crashpad handler: double-forked into its own session, so it is neither in
    // the browser's group nor below it, but reparented to us (the subreaper)
    vantage_agent::chromium::become_subreaper();
    let profile = format!("/tmp/vantage-tree-{}", std::process::id());
    let mut browser = std::process::Command::new("sh")
        .args(["-c", "(setsid sleep 600 &); exec sleep 600"])
        .env("TMPDIR", &profile)
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = browser.id() as i32;
    let me = std::process::id() as i32;
    let cmdline =
        |p: i32| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let helper = loop {
        let found = vantage_agent::procs::descendants(me)
            .into_iter()
            .find(|&p| {
                p != pid && cmdline(p).starts_with("sleep") && !group_members(pid).contains(&p)
            });
        if let Some(h) = found {
            break h;
        }
        assert!(std::time::Instant::now() < end, "the helper did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!vantage_agent::procs::descendants(pid).contains(&helper));
    let marker = format!("TMPDIR={profile}");
    let tree = vantage_agent::procs::browser_tree(pid, marker.as_bytes());
    assert!(
        tree.contains(&helper),
        "the helper {helper} is missing from {tree:?}"
    );
    vantage_agent::procs::kill_and_reap(pid, &tree);
    let _ = browser.wait();
    assert!(
        !std::path::Path::new(&format!("/proc/{helper}")).exists(),
        "the helper survived"
    );
}
