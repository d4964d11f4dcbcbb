//! The Fly.io deployment files checked without a Fly account: `fly.toml` against flyctl's
//! rules (issue 10 lists them), the Dockerfile against the workspace, hadolint and shellcheck on
//! the image's files, and the image's install script.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::{agent_bin, read, root, vantage_bin};
use toml::{Table, Value};
use vantage_fleet::tags::ports;

/// The process groups `docker/entrypoint` dispatches to, Fly's own special groups left out.
fn entrypoint_groups(entrypoint: &str) -> BTreeSet<String> {
    entrypoint
        .lines()
        .filter_map(|l| l.strip_prefix("    ")?.strip_suffix(')'))
        .filter(|g| !g.starts_with(' ') && !g.contains('*') && !g.contains('"'))
        .flat_map(|g| g.split('|').map(|s| s.trim().to_owned()))
        .filter(|g| !g.starts_with("fly_app_"))
        .collect()
}

/// The default the entrypoint gives `VAR` for `group` (its `"${VAR:-default}"`).
fn entrypoint_default(entrypoint: &str, group: &str, var: &str) -> String {
    let arm = entrypoint
        .find(&format!("\n    {group})\n"))
        .map(|at| &entrypoint[at..])
        .map(|arm| &arm[..arm.find(";;").unwrap_or(arm.len())])
        .unwrap_or_else(|| panic!("docker/entrypoint has no `{group}` arm"));
    let needle = format!("${{{var}:-");
    let at = arm
        .find(&needle)
        .unwrap_or_else(|| panic!("docker/entrypoint gives {var} no default for {group}"));
    let rest = &arm[at + needle.len()..];
    rest[..rest.find('}').expect("closing brace")].to_owned()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("`{addr}` has no port"))
}

/// A Fly duration (`15s`, `1m`, `500ms`, or a bare number of seconds) in milliseconds.
fn duration_ms(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(s) => u64::try_from(*s).ok().map(|s| s * 1000),
        Value::String(s) => {
            let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
                (n, 1)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1000)
            } else if let Some(n) = s.strip_suffix('m') {
                (n, 60_000)
            } else {
                (s.as_str(), 1000)
            };
            num.parse::<u64>().ok().map(|n| n * unit)
        }
        _ => None,
    }
}

/// A Fly memory size (`1gb`, `256mb`, or a bare number of MB) in MB.
fn memory_mb(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(n) => Some(*n),
        Value::String(s) => {
            let s = s.to_ascii_lowercase();
            if let Some(n) = s.strip_suffix("gb") {
                n.parse::<i64>().ok().map(|n| n * 1024)
            } else {
                s.strip_suffix("mb").unwrap_or(&s).parse().ok()
            }
        }
        _ => None,
    }
}

fn tables<'a>(fly: &'a Table, key: &str) -> Vec<&'a Table> {
    match fly.get(key) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_table).collect(),
        Some(Value::Table(t)) => vec![t],
        _ => Vec::new(),
    }
}

fn processes(t: &Table) -> Vec<String> {
    t.get("processes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What the binaries and the entrypoint listen on, which fly.toml must match.
#[derive(Debug)]
struct Ports {
    controller_http: u16,
    agent_health: u16,
}

/// Every way `fly` breaks flyctl's rules (issue 10's list), in words; empty when it follows them.
fn violations(fly: &Table, groups: &BTreeSet<String>, ports: &Ports) -> Vec<String> {
    let mut bad = Vec::new();
    let declared: BTreeSet<String> = fly
        .get("processes")
        .and_then(Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    if &declared != groups {
        bad.push(format!(
            "[processes] declares {declared:?}, the entrypoint dispatches {groups:?}"
        ));
    }

    // every section names its groups: without `processes` it applies to the default group only
    let mut sections: Vec<(String, &Table)> = Vec::new();
    for key in [
        "vm",
        "mounts",
        "services",
        "metrics",
        "restart",
        "http_service",
    ] {
        sections.extend(tables(fly, key).into_iter().map(|t| (key.to_owned(), t)));
    }
    if let Some(checks) = fly.get("checks").and_then(Value::as_table) {
        for (name, c) in checks {
            if let Some(c) = c.as_table() {
                sections.push((format!("checks.{name}"), c));
            }
        }
    }
    for (name, t) in &sections {
        let p = processes(t);
        if p.is_empty() {
            bad.push(format!("[{name}] names no `processes`"));
        }
        for g in p.iter().filter(|g| !declared.contains(*g)) {
            bad.push(format!("[{name}] names the undeclared group `{g}`"));
        }
    }

    // public services: only the controller's HTTP API; no internal port
    let internal = [ports::GOSSIP, ports::JOBS, ports::CDP, ports::UNDERLAY];
    let http = tables(fly, "http_service");
    for (name, t) in http
        .iter()
        .map(|t| ("http_service", *t))
        .chain(tables(fly, "services").into_iter().map(|t| ("services", t)))
    {
        let port = t.get("internal_port").and_then(Value::as_integer);
        if port.is_some_and(|p| internal.iter().any(|i| i64::from(*i) == p)) {
            bad.push(format!(
                "[{name}] makes internal port {port:?} a public service"
            ));
        }
    }
    match http.first() {
        None => bad.push("no [http_service] for the controller".into()),
        Some(h) => {
            if processes(h) != ["controller"] {
                bad.push("[http_service] must be the controller's alone".into());
            }
            if h.get("internal_port").and_then(Value::as_integer)
                != Some(i64::from(ports.controller_http))
            {
                bad.push(format!(
                    "[http_service] internal_port is not the controller's {}",
                    ports.controller_http
                ));
            }
            if h.get("force_https").and_then(Value::as_bool) != Some(true) {
                bad.push("[http_service] needs force_https = true".into());
            }
            let off = matches!(h.get("auto_stop_machines"), Some(Value::String(s)) if s == "off")
                || h.get("auto_stop_machines").and_then(Value::as_bool) == Some(false);
            if !off {
                bad.push("[http_service] needs auto_stop_machines = \"off\"".into());
            }
            let checks = tables(h, "checks");
            let health = checks
                .iter()
                .any(|c| c.get("path").and_then(Value::as_str) == Some("/healthz"));
            if !health {
                bad.push("[http_service] has no check on /healthz".into());
            }
            for c in checks {
                check_timing("http_service.checks", c, &mut bad);
            }
        }
    }
    let agent_check = fly
        .get("checks")
        .and_then(Value::as_table)
        .into_iter()
        .flat_map(|t| t.values().filter_map(Value::as_table))
        .find(|c| processes(c) == ["agent"]);
    match agent_check {
        None => bad.push("no top-level [checks.*] for the agent".into()),
        Some(c) => {
            if c.get("port").and_then(Value::as_integer) != Some(i64::from(ports.agent_health)) {
                bad.push(format!(
                    "the agent's check is not on its health port {}",
                    ports.agent_health
                ));
            }
            if c.get("path").and_then(Value::as_str) != Some("/healthz") {
                bad.push("the agent's check is not on /healthz".into());
            }
        }
    }
    if let Some(checks) = fly.get("checks").and_then(Value::as_table) {
        for (name, c) in checks {
            if let Some(c) = c.as_table() {
                check_timing(&format!("checks.{name}"), c, &mut bad);
            }
        }
    }

    // volumes: at most one per group, and a deploy strategy that works with them
    let mounts = tables(fly, "mounts");
    let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mounts {
        for g in processes(m) {
            *per_group.entry(g).or_default() += 1;
        }
    }
    for (g, n) in per_group.iter().filter(|(_, n)| **n > 1) {
        bad.push(format!("group `{g}` has {n} mounts; Fly allows one"));
    }
    let strategy = fly
        .get("deploy")
        .and_then(|d| d.get("strategy"))
        .and_then(Value::as_str)
        .unwrap_or("rolling");
    if !mounts.is_empty() && matches!(strategy, "canary" | "bluegreen") {
        bad.push(format!(
            "deploy strategy `{strategy}` cannot be used with volumes"
        ));
    }

    // machines: sizes in 256 MB steps, Chromium's 1 GB and swap, the controller's 256 MB
    for vm in tables(fly, "vm") {
        let Some(mb) = vm.get("memory").or(vm.get("memory_mb")).and_then(memory_mb) else {
            bad.push(format!("[[vm]] {:?} gives no memory size", processes(vm)));
            continue;
        };
        if mb % 256 != 0 {
            bad.push(format!("[[vm]] memory {mb} MB is not a multiple of 256 MB"));
        }
        let p = processes(vm);
        if p.iter().any(|g| g == "agent") && mb < 1024 {
            bad.push(format!(
                "the agent's [[vm]] has {mb} MB; Chromium needs 1 GB"
            ));
        }
        if p.iter().any(|g| g == "controller") && mb < 256 {
            bad.push(format!(
                "the controller's [[vm]] has {mb} MB; it needs 256 MB"
            ));
        }
    }
    if fly
        .get("swap_size_mb")
        .and_then(Value::as_integer)
        .unwrap_or(0)
        <= 0
    {
        bad.push("no swap_size_mb: Chromium needs swap past 1 GB".into());
    }

    // stopping: a stated signal the binaries handle, time to drain
    match fly.get("kill_signal").and_then(Value::as_str) {
        Some("SIGTERM" | "SIGINT") => {}
        other => bad.push(format!(
            "kill_signal {other:?}: set it to SIGTERM or SIGINT (the binaries handle both)"
        )),
    }
    let kill = fly.get("kill_timeout").and_then(duration_ms);
    if !kill.is_some_and(|ms| (30_000..=300_000).contains(&ms)) {
        bad.push(format!(
            "kill_timeout {kill:?} ms: the agent drains jobs for 20 s and then stops Chromium; Fly allows up to 300 s"
        ));
    }
    if let Some(env) = fly.get("env").and_then(Value::as_table) {
        for k in env.keys().filter(|k| k.starts_with("FLY_")) {
            bad.push(format!("[env] sets {k}: FLY_ variables are Fly's"));
        }
    }
    bad
}

fn check_timing(name: &str, c: &Table, bad: &mut Vec<String>) {
    match c.get("interval").and_then(duration_ms) {
        Some(ms) if ms >= 2_000 => {}
        other => bad.push(format!("[{name}] interval {other:?} ms: at least 2 s")),
    }
    match c.get("timeout").and_then(duration_ms) {
        Some(ms) if ms <= 60_000 => {}
        other => bad.push(format!("[{name}] timeout {other:?} ms: at most 60 s")),
    }
}

/// The port of a `[default: …]` address in a binary's `--help` for `flag`.
fn help_default_port(bin: &Path, args: &[&str], flag: &str) -> u16 {
    let out = Command::new(bin).args(args).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = help
        .find(flag)
        .unwrap_or_else(|| panic!("{flag} not in {args:?} --help"));
    let rest = &help[at..];
    let d = rest.find("[default: ").expect("a default") + "[default: ".len();
    let line = rest[d..].lines().next().unwrap().trim_end();
    port_of(line.strip_suffix(']').expect("[default: …]"))
}

fn the_ports() -> Ports {
    let entry = read("docker/entrypoint");
    let ports = Ports {
        controller_http: port_of(&entrypoint_default(&entry, "controller", "VANTAGE_LISTEN")),
        agent_health: port_of(&entrypoint_default(&entry, "agent", "VANTAGE_HEALTH_ADDR")),
    };
    // the entrypoint only changes the address, never the binaries' default port
    assert_eq!(
        ports.controller_http,
        help_default_port(&vantage_bin(), &["serve"], "--listen"),
        "the entrypoint moves the controller off its default port"
    );
    assert_eq!(
        ports.agent_health,
        help_default_port(&agent_bin(), &[], "--health-addr"),
        "the entrypoint moves the agent's health check off its default port"
    );
    ports
}

#[test]
fn fly_toml_follows_flyctls_rules() {
    let fly: Table = read("fly.toml").parse().expect("fly.toml is TOML");
    let groups = entrypoint_groups(&read("docker/entrypoint"));
    assert_eq!(
        groups,
        BTreeSet::from(["agent".to_owned(), "controller".to_owned()])
    );
    let v = violations(&fly, &groups, &the_ports());
    assert!(
        v.is_empty(),
        "fly.toml breaks flyctl's rules:\n{}",
        v.join("\n")
    );
    // the controller's volume is where the entrypoint puts its data
    let mount = &tables(&fly, "mounts")[0];
    assert_eq!(
        mount.get("destination").and_then(Value::as_str),
        Some(
            entrypoint_default(&read("docker/entrypoint"), "controller", "VANTAGE_DATA_DIR")
                .as_str()
        ),
        "the controller's volume is not its data dir"
    );
    let build = fly.get("build").and_then(|b| b.get("dockerfile"));
    let dockerfile = build.and_then(Value::as_str).expect("[build] dockerfile");
    assert!(root().join(dockerfile).is_file(), "{dockerfile} is missing");
}

/// Each rule, broken on purpose in a copy of the real file, is caught.
#[test]
fn each_fly_rule_catches_its_breach() {
    let text = read("fly.toml");
    let groups = entrypoint_groups(&read("docker/entrypoint"));
    let ports = Ports {
        controller_http: 8080,
        agent_health: 8080,
    };
    let breaches = [
        (
            "destination = \"/data\"\n  processes = [\"controller\"]\n",
            "destination = \"/data\"\n",
            "[mounts] names no `processes`",
        ),
        (
            "strategy = \"rolling\"",
            "strategy = \"canary\"",
            "cannot be used with volumes",
        ),
        (
            "memory = \"256mb\"",
            "memory = \"300mb\"",
            "not a multiple of 256",
        ),
        (
            "memory = \"1gb\"",
            "memory = \"512mb\"",
            "Chromium needs 1 GB",
        ),
        ("interval = \"15s\"", "interval = \"1s\"", "at least 2 s"),
        ("timeout = \"5s\"", "timeout = \"90s\"", "at most 60 s"),
        (
            "RUST_LOG = \"info\"",
            "FLY_REGION = \"iad\"",
            "FLY_ variables are Fly's",
        ),
        ("kill_signal = \"SIGTERM\"\n", "", "kill_signal None"),
        (
            "auto_stop_machines = \"off\"",
            "auto_stop_machines = \"stop\"",
            "auto_stop_machines",
        ),
        (
            "  controller = \"controller\"\n",
            "  controller = \"controller\"\n  cdp = \"agent\"\n",
            "[processes] declares",
        ),
        (
            "internal_port = 8080",
            "internal_port = 9222",
            "a public service",
        ),
    ];
    for (from, to, expected) in breaches {
        assert!(text.contains(from), "fly.toml no longer has `{from}`");
        let broken: Table = text.replacen(from, to, 1).parse().unwrap();
        let v = violations(&broken, &groups, &ports);
        assert!(
            v.iter().any(|m| m.contains(expected)),
            "`{from}` → `{to}` not caught as `{expected}`: {v:?}"
        );
    }
    // a second mount for the controller
    let mut two = text.clone();
    two.push_str("\n[[mounts]]\n  source = \"more\"\n  destination = \"/more\"\n  processes = [\"controller\"]\n");
    let v = violations(&two.parse().unwrap(), &groups, &ports);
    assert!(v.iter().any(|m| m.contains("has 2 mounts")), "{v:?}");
}

/// The commented public UDP ingress is valid once uncommented: UDP, the mesh's port inside and
/// out, the controller's.
#[test]
fn the_optional_udp_ingress_is_right_when_uncommented() {
    let text = read("fly.toml");
    let start = text
        .find("#[[services]]")
        .expect("the commented UDP service");
    let block: String = text[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", &l[1..]))
        .collect();
    let t: Table = block.parse().expect("the commented block is TOML");
    let s = &tables(&t, "services")[0];
    assert_eq!(s.get("protocol").and_then(Value::as_str), Some("udp"));
    assert_eq!(processes(s), ["controller"]);
    let inside = s.get("internal_port").and_then(Value::as_integer);
    let outside = tables(s, "ports")[0]
        .get("port")
        .and_then(Value::as_integer);
    assert_eq!(inside, Some(i64::from(ports::UNDERLAY)));
    assert_eq!(
        inside, outside,
        "Fly's UDP needs the same port inside and out"
    );
    assert!(text.contains("fly ips allocate-v4") && text.contains("fly-global-services"));
}
