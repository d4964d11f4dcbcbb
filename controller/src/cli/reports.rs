//! `vantage reports list` and `vantage reports show ID`: reports the controller kept.

use vantage_proto::api::{ReportSummary, StoredReport};

use super::client::{path_segment, Client};
use super::error::CliError;
use super::members::print_json;
use super::table::{fmt_unix_ms, median_run, report_list_table, report_notes, reports_table};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ReportsCmd {
    /// Reports, newest first.
    List {
        /// Only reports of this URL.
        #[arg(long)]
        url: Option<String>,
        /// Only reports of this region.
        #[arg(long)]
        region: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// One report: where and how it ran, and its numbers.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, cmd: &ReportsCmd) -> Result<(), CliError> {
    match cmd {
        ReportsCmd::List {
            url,
            region,
            limit,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(u) = url {
                query.push(("url", u.clone()));
            }
            if let Some(r) = region {
                query.push(("region", r.clone()));
            }
            if let Some(l) = limit {
                query.push(("limit", l.to_string()));
            }
            let rows: Vec<ReportSummary> = client.get_json("/api/reports", &query).await?;
            if *json {
                return print_json(&rows);
            }
            print!("{}", report_list_table(&rows));
            Ok(())
        }
        ReportsCmd::Show { id, json } => {
            let path = format!("/api/reports/{}", path_segment(&id.to_string()));
            let report: StoredReport = client.get_json(&path, &[]).await?;
            if *json {
                return print_json(&report);
            }
            print!("{}", show_text(&report));
            Ok(())
        }
    }
}

/// The header lines, the one-row table and the notes of one report.
pub fn show_text(r: &StoredReport) -> String {
    let mut out = String::new();
    let run = median_run(&r.report);
    let line = |out: &mut String, k: &str, v: &str| out.push_str(&format!("{k:<10} {v}\n"));
    line(
        &mut out,
        "report",
        &format!("{} (load {})", r.id, r.load_id),
    );
    line(&mut out, "url", &r.report.job.url);
    if let Some(run) = run {
        if run.final_url != r.report.job.url && !run.final_url.is_empty() {
            line(&mut out, "final url", &run.final_url);
        }
        line(&mut out, "status", &run.status.to_string());
    }
    line(
        &mut out,
        "started",
        &format!("{} UTC", fmt_unix_ms(r.report.started_unix_ms)),
    );
    line(
        &mut out,
        "ran on",
        &format!(
            "{} in {} ({})",
            r.agent, r.agent_region, r.report.browser_version
        ),
    );
    line(&mut out, "attempts", &r.attempts.len().max(1).to_string());
    out.push_str(&reports_table(std::slice::from_ref(r)));
    out.push('\n');
    for note in report_notes(r) {
        out.push_str(&note);
        out.push('\n');
    }
    out
}
