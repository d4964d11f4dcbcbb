//! What the report tests share: the workspace's artifact directory, har-validator (installed by
//! `cargo xtask npm` into `target/npm`), HAR timing checks, and a headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;

use chromiumoxide::{Browser, BrowserConfig};
use futures_util::StreamExt;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the controller is inside the workspace")
        .to_path_buf()
}

/// `target/artifacts/<name>`, created.
pub fn artifacts(name: &str) -> PathBuf {
    let dir = workspace().join("target").join("artifacts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs har-validator over `files`; panics with its errors.
pub fn validate_har(files: &[PathBuf]) {
    let modules = workspace().join("target").join("npm").join("node_modules");
    assert!(
        modules.join("har-validator").join("package.json").is_file(),
        "har-validator is not installed in {}: run `cargo xtask npm` (or `cargo xtask test`)",
        modules.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/har-validate.js");
    let out = Command::new("node")
        .arg(script)
        .arg(&modules)
        .args(files)
        .output()
        .expect("run node (installed by `cargo xtask test`)");
    assert!(
        out.status.success(),
        "har-validator refused the HAR:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// HAR's timing rules as the issue states them: each entry's `time` is the sum of its
/// non-negative phases (ssl counted inside connect), and a page's entries are in start order.
/// Returns the number of entries per page id.
pub fn check_har_timings(har: &serde_json::Value) -> std::collections::BTreeMap<String, usize> {
    let entries = har["log"]["entries"].as_array().expect("log.entries");
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    let mut counts = std::collections::BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let t = &e["timings"];
        let sum: f64 = ["blocked", "dns", "connect", "send", "wait", "receive"]
            .iter()
            .map(|k| {
                t[k].as_f64()
                    .unwrap_or_else(|| panic!("entry {i}: timings.{k}"))
            })
            .filter(|v| *v >= 0.0)
            .sum();
        let time = e["time"].as_f64().expect("time");
        assert!(
            (time - sum).abs() < 1e-6,
            "entry {i}: time {time} is not the sum of its phases {sum}: {t}"
        );
        let page = e["pageref"].as_str().expect("pageref").to_owned();
        let start = e["startedDateTime"].as_str().expect("startedDateTime");
        if let Some(prev) = last.get(&page) {
            assert!(
                prev.as_str() <= start,
                "entry {i} of {page} starts at {start}, before the one ahead of it ({prev})"
            );
        }
        last.insert(page.clone(), start.to_owned());
        *counts.entry(page).or_insert(0) += 1;
    }
    counts
}

/// A headless Chromium (`CHROME`, else Debian's) with its event pump.
pub async fn chromium(profile: &Path) -> (Browser, tokio::task::JoinHandle<()>) {
    let exe = std::env::var("CHROME").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let _ = std::fs::remove_dir_all(profile);
    let config = BrowserConfig::builder()
        .chrome_executable(&exe)
        .new_headless_mode()
        .no_sandbox()
        .user_data_dir(profile)
        .window_size(1280, 900)
        .launch_timeout(std::time::Duration::from_secs(60))
        .request_timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("browser config");
    let (browser, mut handler) = Browser::launch(config)
        .await
        .unwrap_or_else(|e| panic!("launch {exe} (install chromium or set CHROME): {e}"));
    let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, pump)
}
