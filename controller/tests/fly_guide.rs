//! Every command of the README's deploy guide exists with the flags it shows: each `vantage`
//! line against the binary's `--help`, each `fly` line against the flyctl syntax issue 10 records
//! (flyctl itself cannot be installed here).

mod common;

use std::process::Command;

use common::vantage_bin;

/// flyctl commands the guide may use, with the flags each takes (from flyctl's documentation).
const FLYCTL: &[(&str, &[&str])] = &[
    (
        "launch",
        &[
            "--no-deploy",
            "--copy-config",
            "--name",
            "--org",
            "--region",
        ],
    ),
    ("volumes create", &["--region", "--size", "--yes"]),
    ("secrets set", &["--stage"]),
    ("deploy", &["--ha", "--strategy"]),
    (
        "scale count",
        &["--region", "--max-per-region", "--yes", "--process-group"],
    ),
    ("logs", &["--region", "--machine", "--no-tail"]),
    ("status", &[]),
    ("ips allocate-v4", &[]),
    ("wireguard create", &[]),
    ("apps destroy", &["--yes"]),
];

/// The shell lines of the README's `## Deploy to Fly.io` section, comments and `&& …` tails cut.
fn guide_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("## Deploy to Fly.io")
        .expect("the README has a deploy guide");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut commands = Vec::new();
    let mut in_code = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let line = line.split("  #").next().unwrap().trim();
        // commands substituted into others, like `"$(vantage keygen --psk)"`
        for sub in line.split("$(").skip(1) {
            commands.push(sub.split(')').next().unwrap().trim().to_owned());
        }
        for part in line.split("&&") {
            let part = part.split(" > ").next().unwrap();
            let part = part.split(" | ").next().unwrap().trim();
            let part = part.strip_prefix("sudo ").unwrap_or(part);
            if !part.is_empty() {
                commands.push(part.to_owned());
            }
        }
    }
    commands
}

fn words(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_owned).collect()
}

/// `--flag` and `--flag=value` as `--flag`.
fn flags(words: &[String]) -> Vec<String> {
    words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_vantage_command_of_the_guide_exists() {
    let commands: Vec<Vec<String>> = guide_commands()
        .iter()
        .map(|c| words(c))
        .filter(|w| w.first().is_some_and(|w| w == "vantage"))
        .collect();
    assert!(
        commands.len() >= 8,
        "the guide shows few vantage commands: {commands:?}"
    );
    for w in &commands {
        // the words before the first flag (subcommands and positionals), then --help
        let head: Vec<&String> = w[1..].iter().take_while(|w| !w.starts_with('-')).collect();
        let out = Command::new(vantage_bin())
            .args(&head)
            .arg("--help")
            .env_remove("VANTAGE_SERVER")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`{}`: vantage {head:?} --help failed: {}",
            w.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        for f in flags(w) {
            assert!(
                help.contains(&format!("{f} ")) || help.contains(&format!("{f}\n")),
                "`{}`: {f} is not a flag of vantage {head:?}:\n{help}",
                w.join(" ")
            );
        }
    }
}

#[test]
fn every_fly_command_of_the_guide_follows_flyctls_syntax() {
    let commands: Vec<Vec<String>> = guide_commands()
        .iter()
        .map(|c| words(c))
        .filter(|w| w.first().is_some_and(|w| w == "fly"))
        .collect();
    for w in &commands {
        let line = w.join(" ");
        let (name, allowed) = FLYCTL
            .iter()
            .find(|(name, _)| line.starts_with(&format!("fly {name}")))
            .unwrap_or_else(|| panic!("`{line}` is no flyctl command the guide may use"));
        for f in flags(w) {
            assert!(
                allowed.contains(&f.as_str()),
                "`{line}`: fly {name} has no {f}"
            );
        }
    }
    let has = |prefix: &str| commands.iter().any(|w| w.join(" ").starts_with(prefix));
    // the steps issue 10 requires, with the flags flyctl needs for them
    assert!(has("fly launch --no-deploy --copy-config"));
    assert!(has("fly secrets set --stage VANTAGE_MESH_PSK="));
    assert!(has("fly deploy --ha=false"));
    assert!(has(
        "fly scale count agent=4 --region sin,ams,iad,syd --max-per-region 1 --yes"
    ));
    assert!(has("fly wireguard create"));
    assert!(has("fly apps destroy"));
    assert!(has("fly logs"));
    // several regions at once spread round-robin from the first unless capped per region
    for w in commands
        .iter()
        .filter(|w| w.join(" ").starts_with("fly scale count"))
    {
        let regions = w.iter().skip_while(|x| *x != "--region").nth(1);
        if regions.is_some_and(|r| r.contains(',')) {
            assert!(w.iter().any(|x| x == "--max-per-region"), "{}", w.join(" "));
        }
    }
}
