//! What the CLI prints: pure functions from the API's types to text, so they are tested without a
//! controller. Tables carry no ANSI styling (comfy-table is built without it), so they read the
//! same in a terminal, a pipe or a file.

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use vantage_proto::api::{
    Attempt, AttemptOutcome, LoadStatus, MemberInfo, RegionInfo, ReportSummary, StoredReport,
};
use vantage_proto::{Report, Run, RunView};

use super::error::failure_kind_name;

/// Shown where a value is unknown.
pub const UNKNOWN: &str = "—";

/// The run a report's numbers are read from: the summary's median run, else the first run.
pub fn median_run(report: &Report) -> Option<&Run> {
    report
        .summary
        .as_ref()
        .and_then(|s| report.runs.get(s.median_run))
        .or_else(|| report.runs.first())
}

/// True when the report has runs and every one of them failed.
pub fn every_run_failed(report: &Report) -> bool {
    !report.runs.is_empty() && report.runs.iter().all(|r| r.error.is_some())
}

/// The load time a row is compared by: only a median run that loaded without error counts.
fn comparable_load_ms(report: &StoredReport) -> Option<f64> {
    median_run(&report.report)
        .filter(|r| r.error.is_none())
        .and_then(|r| r.timing.load_ms)
}

/// One row per region, in 80 columns: TTFB with the estimated RTT beside it, FCP, LCP, CLS, TBT,
/// load, requests, KiB and the load time's distance to the best region; times in whole ms
/// (the header line says so), the agents on a line below.
pub fn reports_table(reports: &[StoredReport]) -> String {
    let best = reports
        .iter()
        .filter_map(comparable_load_ms)
        .min_by(f64::total_cmp);
    let mut table = plain_table();
    table.set_header(vec![
        "region", "TTFB", "RTT", "FCP", "LCP", "CLS", "TBT", "load", "req", "KiB", "vs best",
    ]);
    for r in reports {
        table.add_row(report_row(r, best));
    }
    right_align(&mut table, 1..11);
    let agents: Vec<String> = reports
        .iter()
        .map(|r| format!("{} on {}", r.region, r.agent))
        .collect();
    format!(
        "{}times in ms; RTT is the estimated network round trip to the agent, the floor under TTFB\nagents: {}",
        plain_text(&table),
        agents.join(", ")
    )
}

/// Whole milliseconds, the unit in the table's header.
fn bare_ms(ms: f64) -> String {
    format!("{ms:.0}")
}

fn report_row(r: &StoredReport, best: Option<f64>) -> Vec<Cell> {
    let region = if r.agent_region.is_empty() || r.agent_region == r.region {
        r.region.clone()
    } else {
        format!("{}→{}", r.region, r.agent_region)
    };
    let rtt = r.estimated_rtt_ms.map(bare_ms);
    let rtt = Cell::new(rtt.as_deref().unwrap_or(UNKNOWN));
    let mut cells = vec![Cell::new(region)];
    let Some(run) = median_run(&r.report) else {
        cells.push(Cell::new("no runs"));
        cells.push(rtt);
        cells.extend((0..8).map(|_| Cell::new(UNKNOWN)));
        return cells;
    };
    if run.error.is_some() {
        // a failed run's timings describe how far it got, not the page: keep them out of a
        // comparison and let the notes say what happened
        cells.push(Cell::new(UNKNOWN));
        cells.push(rtt);
        cells.extend((0..7).map(|_| Cell::new(UNKNOWN)));
        cells.push(Cell::new("failed"));
        return cells;
    }
    let opt = |v: Option<f64>| v.map(bare_ms).unwrap_or_else(|| UNKNOWN.into());
    let bytes: u64 = run.requests.iter().map(|q| q.encoded_bytes).sum();
    let delta = match (comparable_load_ms(r), best) {
        (Some(load), Some(best)) if load - best >= 0.5 => format!("+{:.0}", load - best),
        (Some(_), Some(_)) => "best".to_owned(),
        _ => UNKNOWN.to_owned(),
    };
    cells.extend([
        Cell::new(bare_ms(run.timing.response_start_ms)),
        rtt,
        Cell::new(opt(run.first_contentful_paint_ms)),
        Cell::new(opt(run.lcp.as_ref().map(|l| l.time_ms))),
        Cell::new(format!("{:.3}", run.cls)),
        Cell::new(bare_ms(run.tbt.ms)),
        Cell::new(opt(run.timing.load_ms)),
        Cell::new(run.requests.len()),
        Cell::new(format!("{:.1}", bytes as f64 / 1024.0)),
        Cell::new(delta),
    ]);
    cells
}

/// What happened besides the numbers: fallback notes, attempts that did not end in a report,
/// failed regions, the load's own failure and every run error.
pub fn load_notes(status: &LoadStatus) -> Vec<String> {
    let mut out = Vec::new();
    for t in &status.targets {
        if let Some(note) = &t.note {
            out.push(format!("{}: {note}", t.region));
        }
        out.extend(attempt_notes(&t.region, &t.attempts));
        if let Some(f) = &t.failure {
            out.push(format!(
                "{}: failed ({}): {}",
                t.region,
                failure_kind_name(f.kind),
                f.message
            ));
        }
    }
    if let Some(f) = &status.failure {
        out.push(format!(
            "load failed ({}): {}",
            failure_kind_name(f.kind),
            f.message
        ));
    }
    for r in &status.reports {
        out.extend(run_notes(&r.region, &r.report));
    }
    out
}

/// The notes of one stored report: why it ran elsewhere, failed attempts, run errors.
pub fn report_notes(r: &StoredReport) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(note) = &r.note {
        out.push(format!("{}: {note}", r.region));
    }
    out.extend(attempt_notes(&r.region, &r.attempts));
    out.extend(run_notes(&r.region, &r.report));
    out
}

/// `sin: attempt 1 on sin-1 agent_lost: the job stream was silent for 3 s`, for every attempt
/// that ended without a report.
fn attempt_notes<'a>(
    region: &'a str,
    attempts: &'a [Attempt],
) -> impl Iterator<Item = String> + 'a {
    attempts.iter().filter_map(move |a| {
        let outcome = a.outcome?;
        if outcome == AttemptOutcome::Report {
            return None;
        }
        let detail = a
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        Some(format!(
            "{region}: attempt {} on {} {}{detail}",
            a.number,
            a.agent,
            outcome_name(outcome)
        ))
    })
}

/// Run errors, time-outs and omissions, one line each.
fn run_notes(region: &str, report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for run in &report.runs {
        let which = run_name(run);
        if let Some(e) = &run.error {
            out.push(format!("{region}: {which} failed: {e}"));
        }
        if let Some(e) = &run.certificate_error {
            out.push(format!("{region}: {which} certificate error: {e}"));
        }
        if run.timed_out {
            out.push(format!(
                "{region}: {which} timed out; its numbers are partial"
            ));
        }
        for o in &run.omitted {
            out.push(format!("{region}: {which}: {o}"));
        }
    }
    out
}

/// `run 2` or `run 2 (warm)`.
fn run_name(run: &Run) -> String {
    match run.view {
        Some(RunView::Warm) => format!("run {} (warm)", run.index),
        _ => format!("run {}", run.index),
    }
}

pub fn outcome_name(o: AttemptOutcome) -> &'static str {
    match o {
        AttemptOutcome::Report => "report",
        AttemptOutcome::ConnectFailed => "connect_failed",
        AttemptOutcome::AgentLost => "agent_lost",
        AttemptOutcome::Busy => "busy",
        AttemptOutcome::Rejected => "rejected",
        AttemptOutcome::ControllerRestart => "controller_restart",
    }
}

/// Like `serf members`: name, address, state, then what placement reads from the tags.
pub fn members_table(members: &[MemberInfo]) -> String {
    let mut table = plain_table();
    table.set_header(vec![
        "name", "address", "state", "region", "role", "browser", "jobs", "est. RTT",
    ]);
    for m in members {
        let tag = |k: &str| m.tags.get(k).cloned().unwrap_or_else(|| UNKNOWN.into());
        table.add_row(vec![
            m.name.clone(),
            m.addr.clone(),
            m.state.clone(),
            tag(vantage_fleet::tags::REGION),
            tag(vantage_fleet::tags::ROLE),
            tag(vantage_fleet::tags::BROWSER),
            tag(vantage_fleet::tags::JOBS),
            m.rtt_ms
                .map(|r| format!("{r:.1} ms"))
                .unwrap_or_else(|| UNKNOWN.into()),
        ]);
    }
    right_align(&mut table, 7..8);
    plain_text(&table)
}

/// `GET /api/reports`, newest first.
pub fn report_list_table(rows: &[ReportSummary]) -> String {
    let mut table = plain_table();
    table.set_header(vec![
        "id",
        "started (UTC)",
        "region",
        "agent",
        "status",
        "TTFB",
        "load",
        "url",
    ]);
    for r in rows {
        let opt = |v: Option<f64>| v.map(fmt_ms).unwrap_or_else(|| UNKNOWN.into());
        table.add_row(vec![
            r.id.to_string(),
            fmt_unix_ms(r.started_unix_ms),
            r.region.clone(),
            r.agent.clone(),
            r.status.to_string(),
            opt(r.ttfb_ms),
            opt(r.load_ms),
            r.url.clone(),
        ]);
    }
    right_align(&mut table, 5..7);
    plain_text(&table)
}

/// `GET /api/regions`.
pub fn regions_table(rows: &[RegionInfo]) -> String {
    let mut table = plain_table();
    table.set_header(vec!["region", "healthy agents", "agents"]);
    for r in rows {
        table.add_row(vec![
            r.region.clone(),
            r.healthy_agents.to_string(),
            r.agents.to_string(),
        ]);
    }
    right_align(&mut table, 1..3);
    plain_text(&table)
}

/// Whitespace-separated columns, like Serf's and easy to `awk`.
fn plain_table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    t
}

/// A plain table without the cell padding at the line ends (one space before the first column,
/// trailing spaces after the last), so lines start at the margin like `serf members`.
fn plain_text(table: &Table) -> String {
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.strip_prefix(' ').unwrap_or(&line).trim_end());
        out.push('\n');
    }
    out
}

fn right_align(table: &mut Table, columns: std::ops::Range<usize>) {
    for i in columns {
        if let Some(c) = table.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Whole milliseconds, except under 10 ms where the tenth matters.
pub fn fmt_ms(ms: f64) -> String {
    if ms.abs() < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `best` for the fastest row, `+123 ms` for the others.
pub fn fmt_delta(delta_ms: f64) -> String {
    if delta_ms < 0.5 {
        "best".into()
    } else {
        format!("+{delta_ms:.0} ms")
    }
}

/// Binary units, stated as such (`KiB`), since "KB" means either.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `2024-05-01 12:34:56` in UTC.
pub fn fmt_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = crate::report::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::JobSpec;
    use vantage_proto::{Lcp, NavTiming, Request, Summary, TbtWindow};

    fn run(load: f64, ttfb: f64, error: Option<&str>) -> Run {
        Run {
            index: 1,
            view: Some(RunView::Cold),
            status: 200,
            timing: NavTiming {
                response_start_ms: ttfb,
                load_ms: Some(load),
                ..NavTiming::default()
            },
            first_contentful_paint_ms: Some(ttfb + 100.0),
            lcp: Some(Lcp {
                time_ms: ttfb + 200.0,
                element: "img#hero".into(),
                url: None,
                size: 1.0,
            }),
            cls: 0.12345,
            tbt: TbtWindow {
                ms: 55.0,
                from_ms: 0.0,
                to_ms: 0.0,
            },
            requests: vec![
                Request {
                    encoded_bytes: 1024,
                    ..Request::default()
                },
                Request {
                    encoded_bytes: 1536,
                    ..Request::default()
                },
            ],
            error: error.map(Into::into),
            ..Run::default()
        }
    }

    fn stored(region: &str, runs: Vec<Run>, rtt: Option<f64>) -> StoredReport {
        let summary = Summary::from_runs(&runs);
        StoredReport {
            id: 1,
            load_id: "l1".into(),
            region: region.into(),
            agent: format!("{region}-1"),
            agent_region: region.into(),
            attempts: vec![],
            note: None,
            estimated_rtt_ms: rtt,
            report: Report {
                schema: 1,
                job: JobSpec::new("https://example.com/"),
                started_unix_ms: 0,
                region: region.into(),
                node: format!("{region}-1"),
                browser_version: String::new(),
                user_agent: String::new(),
                runs,
                summary,
            },
        }
    }

    /// The cells of the row that starts with `region`.
    fn row<'a>(table: &'a str, region: &str) -> Vec<&'a str> {
        let line = table
            .lines()
            .find(|l| l.starts_with(region))
            .unwrap_or_else(|| panic!("no row {region} in\n{table}"));
        line.split_whitespace().collect()
    }

    #[test]
    fn best_region_and_deltas() {
        let reports = vec![
            stored("sin", vec![run(900.0, 300.0, None)], Some(162.4)),
            stored("ams", vec![run(600.0, 50.0, None)], None),
            stored("iad", vec![run(723.4, 80.0, None)], Some(80.0)),
        ];
        let t = reports_table(&reports);
        let sin = row(&t, "sin");
        assert_eq!(sin[0], "sin");
        assert_eq!(sin[1], "300", "TTFB is response_start_ms");
        assert_eq!(sin[2], "162", "the RTT sits beside the TTFB");
        assert_eq!(sin[5], "0.123", "CLS with 3 decimals");
        assert_eq!(sin[6], "55");
        assert_eq!(sin[7], "900");
        assert_eq!(sin[8], "2");
        assert_eq!(sin[9], "2.5", "KiB are the median run's encoded bytes");
        assert_eq!(sin[10], "+300");
        let ams = row(&t, "ams");
        assert_eq!(ams[2], UNKNOWN, "an unknown RTT is a dash");
        assert_eq!(ams[10], "best");
        assert_eq!(row(&t, "iad")[10], "+123");
        assert!(t.contains("agents: sin on sin-1, ams on ams-1"), "{t}");
    }

    #[test]
    fn fits_80_columns() {
        let mut slow = run(98_765.0, 12_345.0, None);
        slow.requests = (0..1500)
            .map(|_| Request {
                encoded_bytes: 700_000,
                ..Request::default()
            })
            .collect();
        let mut moved = stored("sin", vec![slow], Some(1234.0));
        moved.agent_region = "ams".into();
        let reports = vec![
            moved,
            stored("iad", vec![run(723.4, 80.0, None)], Some(80.0)),
            stored("syd", vec![run(100.0, 0.0, Some("net::ERR"))], None),
        ];
        let t = reports_table(&reports);
        for line in t.lines().filter(|l| !l.starts_with("times in ms")) {
            assert!(
                line.chars().count() <= 80 || line.starts_with("agents:"),
                "{} columns: {line}\n{t}",
                line.chars().count()
            );
        }
        assert_eq!(row(&t, "sin→ams")[10], "+98042", "{t}");
    }

    #[test]
    fn median_run_is_used_and_failures_are_not_best() {
        let runs = vec![
            run(900.0, 10.0, None),
            run(500.0, 20.0, None),
            run(700.0, 30.0, None),
        ];
        let ok = stored("sin", runs, None);
        assert_eq!(median_run(&ok.report).unwrap().timing.load_ms, Some(700.0));
        let mut broken = stored(
            "ams",
            vec![run(100.0, 0.0, Some("net::ERR_NAME_NOT_RESOLVED"))],
            None,
        );
        broken.report.summary = None;
        assert!(every_run_failed(&broken.report));
        let t = reports_table(&[ok, broken.clone()]);
        assert_eq!(row(&t, "sin")[7], "700");
        assert_eq!(
            row(&t, "sin")[10],
            "best",
            "a failed region is never the best"
        );
        assert_eq!(row(&t, "ams")[10], "failed");
        assert_eq!(
            report_notes(&broken),
            vec!["ams: run 1 failed: net::ERR_NAME_NOT_RESOLVED".to_owned()]
        );
    }

    #[test]
    fn notes_name_failed_attempts() {
        let mut r = stored("sin", vec![run(500.0, 20.0, None)], None);
        r.note = Some("no healthy agent in sin; ran in ams".into());
        r.attempts = vec![
            Attempt {
                number: 1,
                agent: "sin-1".into(),
                region: "sin".into(),
                dispatched_unix_ms: 0,
                ended_unix_ms: Some(1),
                outcome: Some(AttemptOutcome::AgentLost),
                detail: Some("the job stream was silent for 3 s".into()),
            },
            Attempt {
                number: 2,
                agent: "sin-2".into(),
                region: "sin".into(),
                dispatched_unix_ms: 0,
                ended_unix_ms: Some(1),
                outcome: Some(AttemptOutcome::Report),
                detail: None,
            },
        ];
        assert_eq!(
            report_notes(&r),
            vec![
                "sin: no healthy agent in sin; ran in ams".to_owned(),
                "sin: attempt 1 on sin-1 agent_lost: the job stream was silent for 3 s".to_owned(),
            ]
        );
    }

    #[test]
    fn members_like_serf() {
        let m = MemberInfo {
            name: "sin-1".into(),
            addr: "[fd00::1]:7946".into(),
            state: "alive".into(),
            tags: [("region", "sin"), ("role", "agent"), ("jobs", "0/2")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            coordinate: None,
            rtt_ms: Some(162.42),
        };
        let t = members_table(&[m]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("name "), "{t}");
        assert!(lines.iter().all(|l| l == &l.trim_end()), "{t}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "sin-1",
                "[fd00::1]:7946",
                "alive",
                "sin",
                "agent",
                UNKNOWN,
                "0/2",
                "162.4",
                "ms"
            ]
        );
    }

    #[test]
    fn units() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1_572_864), "1.5 MiB");
        assert_eq!(fmt_ms(3.24), "3.2 ms");
        assert_eq!(fmt_ms(151.1), "151 ms");
        assert_eq!(fmt_delta(0.0), "best");
        assert_eq!(fmt_delta(123.4), "+123 ms");
        assert_eq!(fmt_unix_ms(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_unix_ms(1_709_251_199_000), "2024-02-29 23:59:59");
    }
}
