//! npm packages the tests run, pinned and installed into the project (`target/npm`), never
//! globally. The tests look for them there and fail naming `cargo xtask npm` when absent.

/// Where the packages go, relative to the workspace root.
pub const DIR: &str = "target/npm";

/// A pinned npm package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
}

/// har-validator checks HAR output against the HAR 1.2 schema (controller/tests/har.rs).
pub const PACKAGES: &[Package] = &[Package {
    name: "har-validator",
    version: "5.1.5",
}];

/// Whether an installed `package.json` is the pinned version (`"version": "5.1.5"`).
pub fn is_pinned(package_json: &str, p: &Package) -> bool {
    serde_json::from_str::<serde_json::Value>(package_json)
        .ok()
        .and_then(|v| v.get("version")?.as_str().map(|s| s == p.version))
        .unwrap_or(false)
}

/// The `npm install` arguments for the missing packages, into `DIR`.
pub fn install_args(missing: &[Package]) -> Vec<String> {
    let mut args: Vec<String> = [
        "install",
        "--prefix",
        DIR,
        "--no-save",
        "--no-audit",
        "--no-fund",
    ]
    .map(String::from)
    .to_vec();
    args.extend(missing.iter().map(|p| format!("{}@{}", p.name, p.version)));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_and_the_install_command() {
        let p = PACKAGES[0];
        assert!(is_pinned(
            r#"{"name":"har-validator","version":"5.1.5"}"#,
            &p
        ));
        assert!(!is_pinned(r#"{"version":"5.1.3"}"#, &p));
        assert!(!is_pinned("not json", &p));
        assert_eq!(
            install_args(&[p]).last().map(String::as_str),
            Some("har-validator@5.1.5")
        );
    }
}
