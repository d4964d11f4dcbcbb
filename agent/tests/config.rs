//! Each invalid setting stops the real binary at startup with an error that names the setting,
//! what was wrong, and what is accepted.

use std::process::Command;

fn fails_with(args: &[&str], env: &[(&str, &str)], expect: &[&str]) {
    let data = std::env::temp_dir().join(format!("vantage-config-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
        .args(args)
        .arg("--data-dir")
        .arg(&data)
        .envs(env.iter().copied())
        .env_remove("FLY_APP_NAME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} {env:?} was accepted");
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
        &["--psk", PSK, "--gossip-profile", "fast"],
        &[],
        &["`fast`", "lan, wan, fleet"],
    );
    fails_with(
        &["--psk", PSK, "--bind", "nowhere.invalid:1"],
        &[],
        &["--bind", "host:port"],
    );
}
