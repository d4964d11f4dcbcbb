//! How long `vantage demo` takes to be useful: from start to ready (every agent joined, every
//! browser ready) and to the first complete report, for 4 and 8 regions, each several times.
//! Real processes, real Chromium, the built-in matrix.
//!
//! `cargo run --release -p vantage --example demo-bench -- [--rounds 3]`
//!
//! Last line: `demo-bench regions=8 ready_s=<x> first_report_s=<x>` (medians).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

const FOUR: &str = "sin,ams,iad,syd";
const EIGHT: &str = "sin,ams,iad,syd,fra,nrt,gru,sjc";

fn main() {
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            other => panic!("unknown flag {other}; accepted: --rounds N"),
        }
    }
    let bin = common::vantage_bin();
    let _ = common::agent_bin();
    let mut last = (0.0, 0.0);
    for (n, regions) in [(4, FOUR), (8, EIGHT)] {
        let mut ready = Vec::new();
        let mut first = Vec::new();
        for _ in 0..rounds {
            let (r, f) = one(&bin, regions);
            println!("regions={n} ready_s={r:.2} first_report_s={f:.2}");
            ready.push(r);
            first.push(f);
        }
        last = (median(&mut ready), median(&mut first));
        println!(
            "regions={n}: median ready {:.2} s (max {:.2}), first report {:.2} s (max {:.2})",
            last.0,
            ready.iter().cloned().fold(0.0, f64::max),
            last.1,
            first.iter().cloned().fold(0.0, f64::max)
        );
    }
    println!(
        "demo-bench regions=8 ready_s={:.2} first_report_s={:.2}",
        last.0, last.1
    );
}

/// One demo: seconds to "fleet ready" and to the first region's report.
fn one(bin: &std::path::Path, regions: &str) -> (f64, f64) {
    let data = std::env::temp_dir().join(format!("vdb-{}", std::process::id()));
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(["demo", "--regions", regions, "--runs", "1"])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vantage demo");
    let (mut ready, mut first) = (None, None);
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let t = start.elapsed().as_secs_f64();
        if ready.is_none() && line.contains("fleet ready") {
            ready = Some(t);
        }
        if first.is_none() && line.contains("] done (report") {
            first = Some(t);
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "vantage demo --regions {regions} failed");
    let _ = std::fs::remove_dir_all(&data);
    (
        ready.expect("the demo said when it was ready"),
        first.expect("the demo reported a region"),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
