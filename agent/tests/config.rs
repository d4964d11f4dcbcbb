//! Each invalid setting stops the real binary at startup with an error that names the setting,
//! what was wrong, and what is accepted.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fails_with(args: &[&str], env: &[(&str, &str)], expect: &[&str]) {
    let data = std::env::temp_dir().join(format!("vantage-config-test-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage-agent"));
    // an accepted config would leave the agent running: it must not take a fixed port then
    for (flag, value) in [("--bind", "127.0.0.1:0"), ("--health-addr", "127.0.0.1:0")] {
        if !args.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    let mut child = cmd
        .args(args)
        .arg("--data-dir")
        .arg(&data)
        .env_remove("FLY_APP_NAME")
        .env_remove("VANTAGE_CONTROLLER_KEYS")
        .envs(env.iter().copied())
        .arg("--no-browser")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // a config error stops the binary at once; one still running was accepted
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(
        status.is_some_and(|s| !s.success()),
        "{args:?} {env:?} was accepted"
    );
    for e in expect {
        assert!(
            stderr.contains(e),
            "{args:?} {env:?}: wanted `{e}` in:\n{stderr}"
        );
    }
}

const PSK: &str = "xiZ+OFpjwYZyd9vAVP0NAzwEDonvVcGmZCEpO9LUfRE=";

#[test]
fn invalid_settings_are_named_with_what_is_accepted() {
    fails_with(
        &[],
        &[("VANTAGE_MESH_PSK", "c2hvcnQ=")],
        &["VANTAGE_MESH_PSK", "32 bytes"],
    );
    fails_with(
        &["--psk", PSK, "--allow-net", "10.0.0.0"],
        &[],
        &[
            "--allow-net",
            "`10.0.0.0` is not a network",
            "like 10.1.0.0/16",
        ],
    );
    fails_with(
        &[],
        &[
            ("VANTAGE_MESH_PSK", PSK),
            ("VANTAGE_ALLOW_NETS", "fd00::/8,1.2.3.4/40"),
        ],
        &["VANTAGE_ALLOW_NETS", "`1.2.3.4/40`"],
    );
    fails_with(
        &["--psk", PSK, "--chrome-arg=--no-proxy-server"],
        &[],
        &["--no-proxy-server", "egress guard", "--allow-private"],
    );
    fails_with(
        &["--psk", PSK, "--capacity", "0"],
        &[],
        &["--capacity is 0", "accepted is 1"],
    );
    fails_with(
        &["--psk", PSK, "--chromium-nice", "20"],
        &[],
        &["--chromium-nice is 20", "accepted is 0", "to 19"],
    );
    fails_with(
        &["--psk", PSK, "--gossip-profile", "fast"],
        &[],
        &["`fast`", "lan, wan, fleet"],
    );
    fails_with(
        &[
            "--psk",
            PSK,
            "--controller-keys",
            &format!("{PSK},not-a-key"),
        ],
        &[],
        &[
            "--controller-keys",
            "entry 2 `not-a-key`",
            "not a WireGuard public key",
            "wg pubkey",
        ],
    );
    fails_with(
        &["--psk", PSK],
        &[("VANTAGE_CONTROLLER_KEYS", "c2hvcnQ=")],
        &["VANTAGE_CONTROLLER_KEYS", "entry 1", "32 bytes"],
    );
    fails_with(
        &["--psk", PSK, "--bind", "nowhere.invalid:1"],
        &[],
        &["--bind", "host:port"],
    );
}
