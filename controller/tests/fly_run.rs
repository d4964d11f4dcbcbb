//! The image's processes run as Fly runs them, without a Fly account: `docker/entrypoint` as the
//! image's non-root user with Fly's environment (loopback where Fly has 6PN), a controller and an
//! agent that joins it and serves a page load from the CLI; and a stock WireGuard client, set up
//! by `wg-quick` from `vantage peer config`, reaching the controller's API over the mesh.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_bin, free_tcp, free_udp, key, root, vantage_bin, Proc, TOKEN};
use vantage_mesh::{OverlayPrefix, PresharedKey};
use vantage_tests::netns::{veth, Netns};
use vantage_tests::origin::Origin;

/// The image's user, as the Dockerfile's last `USER uid:gid` says.
fn image_user() -> (u32, u32) {
    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the Dockerfile sets USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    (uid.parse().unwrap(), gid.parse().unwrap())
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-fly-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A directory the image's user owns, as its volume or home would be.
fn owned_dir(path: &Path, (uid, gid): (u32, u32)) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    path.to_path_buf()
}

/// The environment Fly gives every machine (fly.io/docs/machines/runtime-environment), with the
/// loopback address where Fly has the machine's 6PN address.
fn fly_env(cmd: &mut Command, group: &str, region: &str, machine_id: &str) {
    cmd.env_clear()
        .env("FLY_APP_NAME", "vantage-test")
        .env("FLY_MACHINE_ID", machine_id)
        .env("FLY_ALLOC_ID", machine_id)
        .env("FLY_REGION", region)
        .env("PRIMARY_REGION", "iad")
        .env("FLY_PUBLIC_IP", "")
        .env(
            "FLY_IMAGE_REF",
            "registry.fly.io/vantage-test:deployment-test",
        )
        .env("FLY_MACHINE_VERSION", "01HTEST")
        .env("FLY_PRIVATE_IP", "::1")
        .env("FLY_PROCESS_GROUP", group)
        .env("FLY_VM_MEMORY_MB", "1024");
}

/// Starts `docker/entrypoint ARGS` as the image's user, with the test binaries first on PATH.
fn start_entrypoint(cmd: &mut Command, dir: &Path, name: &str, user: (u32, u32)) -> Proc {
    let bin_dir = vantage_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap();
    cmd.env("PATH", path)
        .env("RUST_LOG", "info")
        .uid(user.0)
        .gid(user.1)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    let child = cmd.spawn().expect("run docker/entrypoint");
    Proc {
        name: name.into(),
        child,
        log,
    }
}

fn cli(api: &str, args: &[&str]) -> std::process::Output {
    Command::new(vantage_bin())
        .args(["--server", api, "--token", TOKEN])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vantage")
}

/// Waits until `vantage regions --json` shows a healthy agent in `region`.
fn wait_for_region(api: &str, region: &str, limit: Duration, logs: &Path) {
    let start = Instant::now();
    loop {
        let out = cli(api, &["regions", "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let healthy =
            rows.as_array().into_iter().flatten().any(|r| {
                r["region"] == region && r["healthy_agents"].as_u64().is_some_and(|n| n > 0)
            });
        if healthy {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "no healthy agent in {region} within {limit:?}; logs in {}",
            logs.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether the Chromium processes the image's user runs were started with their sandbox on, as
/// their command lines say (`None`: no Chromium of that user found).
fn chromium_sandboxed(uid: u32) -> Option<bool> {
    let mut seen = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let p = entry.path();
        let owner = std::fs::metadata(&p).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        if owner.ok() != Some(uid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_browser = args.first().is_some_and(|a| a.contains("chrom"))
            && !args.iter().any(|a| a.starts_with("--type="));
        if is_browser {
            let sandboxed = !args.iter().any(|a| a == "--no-sandbox");
            seen = Some(seen.unwrap_or(true) && sandboxed);
        }
    }
    seen
}

/// Whether Chromium starts with its sandbox (no `--no-sandbox`) as `user` on this machine: a
/// headless page dumped by the image's user.
fn sandbox_allowed(user: (u32, u32), dir: &Path) -> bool {
    let home = owned_dir(&dir.join("sandbox-probe"), user);
    Command::new("chromium")
        .args(["--headless", "--disable-gpu", "--dump-dom"])
        .arg(format!(
            "--user-data-dir={}",
            home.join("profile").display()
        ))
        .arg("data:text/html,<p>sandboxed</p>")
        .env("HOME", &home)
        .uid(user.0)
        .gid(user.1)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("sandboxed")
        })
}

/// The entrypoint picks the group, maps Fly's environment, runs both binaries as the image's
/// user, and the agent it started joins the controller it started and serves a load.
#[test]
fn entrypoint_runs_a_fleet_as_fly_would() {
    let user = image_user();
    let dir = test_dir("entrypoint");
    let _ = owned_dir(&dir, user);
    let entrypoint = root().join("docker/entrypoint");
    let psk = PresharedKey::from_bytes([77; 32]);
    let controller_key = key(7);
    let (ctl_udp, agent_udp) = (free_udp().port(), free_udp().port());
    let api = format!("http://{}", free_tcp());
    let health = free_tcp();

    // the controller, named by its argument as fly.toml's [processes] does
    let mut cmd = Command::new(&entrypoint);
    cmd.arg("controller");
    fly_env(&mut cmd, "controller", "iad", "e286de4f711e86");
    cmd.env("VANTAGE_MESH_PSK", psk.to_base64())
        .env("VANTAGE_MESH_KEY", controller_key.to_base64())
        .env("VANTAGE_API_TOKEN", TOKEN)
        .env("VANTAGE_LISTEN", api.trim_start_matches("http://"))
        .env("VANTAGE_DATA_DIR", owned_dir(&dir.join("data"), user))
        .env("VANTAGE_SEED_PORT", ctl_udp.to_string())
        // no DNS lookups of vantage-test.internal here: nothing answers them
        .env("VANTAGE_DNS_SERVER", "127.0.0.1:9")
        .env("VANTAGE_ALLOW_NETS", "127.0.0.0/8");
    let mut controller = start_entrypoint(&mut cmd, &dir, "controller", user);

    // the agent, named by FLY_PROCESS_GROUP alone
    let mut cmd = Command::new(&entrypoint);
    fly_env(&mut cmd, "agent", "sin", "148ed193b95089");
    cmd.env("VANTAGE_MESH_PSK", psk.to_base64())
        .env("VANTAGE_SEEDS", format!("[::1]:{ctl_udp}"))
        .env("VANTAGE_SEED_PORT", agent_udp.to_string())
        .env(
            "VANTAGE_CONTROLLER_KEYS",
            controller_key.public_key().to_base64(),
        )
        .env("VANTAGE_HEALTH_ADDR", health.to_string())
        .env("VANTAGE_ALLOW_NETS", "127.0.0.0/8")
        .env("HOME", owned_dir(&dir.join("home"), user))
        .env("VANTAGE_DATA_DIR", owned_dir(&dir.join("agent"), user));
    let mut agent = start_entrypoint(&mut cmd, &dir, "agent", user);

    // exec: the entrypoint's process is the binary itself, so Fly's stop signal reaches it
    std::thread::sleep(Duration::from_millis(500));
    let exe = |p: &Proc| std::fs::read_link(format!("/proc/{}/exe", p.pid())).unwrap();
    assert_eq!(exe(&agent), agent_bin().canonicalize().unwrap());
    assert_eq!(exe(&controller), vantage_bin().canonicalize().unwrap());

    wait_for_region(&api, "sin", Duration::from_secs(120), &dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(Origin::start()).unwrap();
    let page = origin.url("/index.html");
    let out = cli(&api, &["load", &page, "--from", "sin"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vantage load failed: {text}{}; logs in {}",
        String::from_utf8_lossy(&out.stderr),
        dir.display()
    );
    println!("{text}");
    // the agent is named and placed from Fly's variables, and the 6PN address it advertises is
    // FLY_PRIVATE_IP's
    let members = cli(&api, &["members", "--json"]);
    let members: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap();
    let me = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "148ed193b95089")
        .unwrap_or_else(|| panic!("the agent is not named by FLY_MACHINE_ID: {members}"));
    assert_eq!(me["tags"]["region"], "sin");
    assert_eq!(me["tags"]["ep"], format!("[::1]:{agent_udp}"));

    let sandbox = chromium_sandboxed(user.0);
    let allowed = sandbox_allowed(user, &dir);
    println!(
        "chromium as uid {}: sandbox {}; this machine {} Chromium's sandbox to that user",
        user.0,
        match sandbox {
            Some(true) => "on",
            Some(false) => "off (--no-sandbox)",
            None => "unknown (no browser process found)",
        },
        if allowed { "allows" } else { "does not allow" }
    );
    assert!(
        sandbox.is_some(),
        "the agent's Chromium does not run as the image's user"
    );
    // an agent that reports its sandbox state on /healthz must have used the sandbox it could
    let healthz = rt
        .block_on(async {
            reqwest::get(format!("http://{health}/healthz"))
                .await?
                .text()
                .await
        })
        .unwrap_or_default();
    println!("agent /healthz: {healthz}");
    if healthz.contains("sandbox") && allowed {
        assert_eq!(
            sandbox,
            Some(true),
            "the machine allows the sandbox but the agent ran without it"
        );
    }

    // SIGINT stops the agent as SIGTERM would (kill_signal is SIGTERM; both are handled)
    // SAFETY: kill(2) on a child we own
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(agent.pid() as libc::pid_t, libc::SIGINT);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the agent ignored SIGINT; logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "agent exit on SIGINT: {status}");
    controller.term();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Fly's special groups and bad groups, through the entrypoint.
#[test]
fn entrypoint_dispatch_and_its_errors() {
    let entrypoint = root().join("docker/entrypoint");
    let run = |args: &[&str], group: Option<&str>| {
        let mut cmd = Command::new(&entrypoint);
        cmd.args(args).env_remove("FLY_PROCESS_GROUP");
        if let Some(g) = group {
            cmd.env("FLY_PROCESS_GROUP", g);
        }
        cmd.output().unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let none = run(&[], None);
    assert_eq!(none.status.code(), Some(64));
    assert!(text(&none).contains("no process group"), "{}", text(&none));
    let bad = run(&[], Some("worker"));
    assert_eq!(bad.status.code(), Some(64));
    assert!(
        text(&bad).contains("unknown process group `worker`; accepted: agent, controller"),
        "{}",
        text(&bad)
    );
    // `fly console` and a release_command run what they are given
    let console = run(&["echo", "hello from console"], Some("fly_app_console"));
    assert!(console.status.success());
    assert_eq!(text(&console).trim(), "hello from console");
    let release = run(&[], Some("fly_app_release_command"));
    assert!(release.status.success(), "{}", text(&release));
    // and core dumps are off for everything the entrypoint starts
    let core = run(&["sh", "-c", "ulimit -c"], Some("fly_app_release_command"));
    assert_eq!(text(&core).trim(), "0");
}

/// `wg-quick` (with wireguard-go) brings up the config `vantage peer config` printed, inside a
/// network namespace; the CLI in that namespace reaches the controller's API over the mesh.
#[test]
fn a_stock_wireguard_client_reaches_the_controller_api() {
    let dir = test_dir("peer");
    let ns = Netns::new("vfly").unwrap();
    let (host_ip, ns_ip) = free_subnet();
    veth(None, &format!("{host_ip}/24"), &ns, &format!("{ns_ip}/24")).unwrap();

    let psk = PresharedKey::from_bytes([91; 32]);
    let controller_key = key(9);
    let underlay = format!("{host_ip}:{}", free_udp().port());
    let log = dir.join("controller.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = Command::new(vantage_bin())
        .arg("serve")
        .args(["--psk", &psk.to_base64()])
        .args(["--private-key", &controller_key.to_base64()])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--bind", &underlay, "--name", "ctl", "--region", "iad"])
        .args(["--listen", &free_tcp().to_string(), "--api-token", TOKEN])
        .env("RUST_LOG", "info")
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let _controller = Proc {
        name: "ctl".into(),
        child,
        log,
    };

    let out = Command::new(vantage_bin())
        .args(["peer", "config", "--node-key"])
        .arg(controller_key.public_key().to_base64())
        .args(["--endpoint", &underlay])
        .env("VANTAGE_MESH_PSK", psk.to_base64())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let iface = format!("vp{}", std::process::id() % 100_000);
    let conf = dir.join(format!("{iface}.conf"));
    std::fs::write(&conf, &out.stdout).unwrap();
    println!(
        "{}",
        String::from_utf8_lossy(&out.stdout).replace(&psk.to_base64(), "<psk>")
    );

    let client = WgQuick::up(&ns, &conf);
    let node = OverlayPrefix::from_psk(&psk).address_of(&controller_key.public_key());
    let api = format!("http://[{node}]:{}", vantage_fleet::tags::ports::API);
    let start = Instant::now();
    let members = loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(vantage_bin())
            .args(["--server", &api, "--token", TOKEN, "members", "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            break out.stdout;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the client did not reach {api} over the mesh: {}; logs in {}",
            String::from_utf8_lossy(&out.stderr),
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let members: serde_json::Value = serde_json::from_slice(&members).unwrap();
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "ctl"),
        "{members}"
    );
    // the API still wants its token over the mesh
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(vantage_bin())
        .args([
            "--server",
            &api,
            "--token",
            "wrong-token-0123456789",
            "members",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a wrong token over the mesh");
    // (down first: wg-quick reads the config to take the interface down)
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host/namespace address pair in a /24 no host interface uses yet (a crashed run may leave
/// one behind, and two links on one subnet would misroute).
fn free_subnet() -> (String, String) {
    let used = String::from_utf8(
        Command::new("ip")
            .args(["-br", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    (0..50)
        .map(|i| 200 + (std::process::id() + i) % 50)
        .map(|net| (format!("10.{net}.7.1"), format!("10.{net}.7.2")))
        .find(|(host, _)| !used.contains(&format!("{host}/")))
        .expect("a free 10.x.7.0/24 for the veth link")
}

/// A `wg-quick` interface (wireguard-go, userspace) in a namespace, taken down on drop, so its
/// daemon does not outlive the test and keep the namespace and its veth alive.
struct WgQuick {
    ns: String,
    conf: PathBuf,
}

impl WgQuick {
    fn up(ns: &Netns, conf: &Path) -> Self {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "wg-quick", "up"])
            .arg(conf)
            .env("WG_QUICK_USERSPACE_IMPLEMENTATION", "wireguard-go")
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .output()
            .expect("run wg-quick (wireguard-tools)");
        assert!(
            out.status.success(),
            "wg-quick up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            ns: ns.name.clone(),
            conf: conf.to_path_buf(),
        }
    }
}

impl Drop for WgQuick {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "wg-quick", "down"])
            .arg(&self.conf)
            .output();
    }
}
