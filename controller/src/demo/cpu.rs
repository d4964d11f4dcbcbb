//! The machine's CPU, which every region of the demo shares: loads start once the fleet's
//! start-up (browsers, their helpers, the first contexts) has died down, so that no region's
//! connect or wait phase carries another one's start-up.

use std::time::{Duration, Instant};

/// Busy share of all cores below which the machine counts as settled.
const SETTLED: f64 = 0.25;
/// The window one reading covers.
const WINDOW: Duration = Duration::from_millis(250);
/// Readings in a row that must be below [`SETTLED`].
const IN_A_ROW: usize = 2;
/// How long to wait for it; a machine busy with other work never settles.
const PATIENCE: Duration = Duration::from_secs(10);

/// Jiffies of all cores: (busy, total), from the `cpu` line of `/proc/stat`.
fn parse_cpu_line(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user and nice)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn read() -> Option<(u64, u64)> {
    parse_cpu_line(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The busy share of all cores between two readings.
fn busy_between(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.1.saturating_sub(a.1);
    if total == 0 {
        return 0.0;
    }
    b.0.saturating_sub(a.0) as f64 / total as f64
}

/// Waits until the machine's CPU is mostly idle, showing progress; says so when it never is.
/// Without `/proc/stat` there is nothing to wait for.
pub async fn wait_settled() {
    let started = Instant::now();
    let Some(mut last) = read() else { return };
    let mut quiet = 0;
    let mut shown = false;
    loop {
        tokio::time::sleep(WINDOW).await;
        let Some(now) = read() else { return };
        let busy = busy_between(last, now);
        last = now;
        quiet = if busy < SETTLED { quiet + 1 } else { 0 };
        if quiet >= IN_A_ROW {
            if shown {
                eprintln!(
                    "machine settled in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            return;
        }
        if started.elapsed() >= PATIENCE {
            eprintln!(
                "the machine is still {:.0}% busy after {} s; the timings may carry that work",
                busy * 100.0,
                PATIENCE.as_secs()
            );
            return;
        }
        if !shown {
            eprintln!(
                "waiting for the machine to settle: {:.0}% CPU busy (every region shares it)",
                busy * 100.0
            );
            shown = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_gives_busy_and_total_jiffies() {
        let stat = "cpu  100 20 30 800 50 5 5 0 0 0\ncpu0 50 10 15 400 25 2 3 0 0 0\nintr 1\n";
        // busy: user 100 + nice 20 + system 30 + irq 5 + softirq 5; idle 800 + iowait 50
        assert_eq!(parse_cpu_line(stat), Some((160, 1010)));
        assert_eq!(parse_cpu_line("intr 1\n"), None);
        assert_eq!(parse_cpu_line("cpu  1 x 3\n"), None);
    }

    #[test]
    fn the_busy_share_is_of_the_time_between_readings() {
        assert_eq!(busy_between((100, 1000), (150, 1200)), 0.25);
        // no time passed: nothing was busy
        assert_eq!(busy_between((100, 1000), (100, 1000)), 0.0);
    }
}
