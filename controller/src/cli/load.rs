//! `vantage load URL`: submit a load, follow its events, then print the regions side by side.

use std::io::IsTerminal;
use std::time::Duration;

use futures_util::StreamExt;
use vantage_proto::api::{FromSpec, LoadAccepted, LoadEvent, LoadRequest, LoadStatus};
use vantage_proto::{View, Viewport, Wait, MAX_RUNS};

use super::args::{parse_from, parse_timeout, parse_view, parse_viewport, parse_wait};
use super::client::{path_segment, Client};
use super::error::CliError;
use super::output::OutputArgs;
use super::progress::{Bars, Lines, Progress, Silent};
use super::table::{every_run_failed, load_notes, reports_table};

/// How often the load is polled when its event stream broke off.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Flags of `vantage load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The page to load (http or https).
    pub url: String,
    /// Where: region codes (`sin,ams`), `all` (one agent per region) or `nearest`.
    #[arg(long, default_value = "nearest", value_parser = parse_from)]
    pub from: String,
    /// Runs per region (1 to 9); the table shows the median run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_RUNS as i64))]
    pub runs: u32,
    /// `cold` (a fresh browser context per run; the default), `warm` or `both`.
    #[arg(long, value_parser = parse_view)]
    pub view: Option<View>,
    /// Viewport in CSS pixels, like `1366x768` (the default).
    #[arg(long, value_parser = parse_viewport)]
    pub viewport: Option<Viewport>,
    /// Keep a screenshot of each run in the report.
    #[arg(long)]
    pub screenshot: bool,
    /// Deadline per region: `60s` (the default), `1500ms`, `2m`, or bare seconds.
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<u32>,
    /// When a run is over: `load`, or `quiet[:MS]` (load, then no network for MS; 2000 by
    /// default).
    #[arg(long, value_parser = parse_wait)]
    pub wait: Option<Wait>,
    /// Fail rather than run in another region when a region has no healthy agent.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Override the browser's User-Agent.
    #[arg(long)]
    pub user_agent: Option<String>,
}

impl LoadArgs {
    /// The API request these flags ask for; what is not given is left to the controller's
    /// defaults.
    pub fn request(&self) -> LoadRequest {
        LoadRequest {
            url: self.url.clone(),
            from: FromSpec::Text(self.from.clone()),
            runs: self.runs,
            view: self.view,
            viewport: self.viewport,
            screenshot: self.screenshot,
            timeout: self.timeout,
            wait: self.wait,
            strict: self.strict,
            user_agent: self.user_agent.clone(),
        }
    }
}

/// Runs `vantage load`: the table (or JSON) goes to stdout, progress to stderr; the error says
/// how the load went wrong, with its exit code.
pub async fn run(client: &Client, args: &LoadArgs) -> Result<(), CliError> {
    let accepted: LoadAccepted = client.post_json("/api/loads", &args.request()).await?;
    tracing::debug!(id = %accepted.id, location = %accepted.location, "load accepted");
    let mut progress = progress_for(args);
    let followed = follow(client, &accepted.id, progress.as_mut()).await;
    progress.finish();
    drop(progress);
    if let Err(e) = followed {
        tracing::warn!("{e}; polling the load instead");
    }
    let status = wait_terminal(client, &accepted.id).await?;
    args.output.write_files(&status)?;
    print_status(&status, args.output.json)?;
    outcome(&status)
}

/// Bars on a terminal, lines in a pipe, nothing with `--json` (whose stdout a program reads
/// and whose stderr should stay for errors).
fn progress_for(args: &LoadArgs) -> Box<dyn Progress> {
    if args.output.json {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new(args.runs))
    } else {
        Box::new(Lines { runs: args.runs })
    }
}

/// Follows `/api/loads/{id}/events` until `done`. Events this CLI does not know are skipped, so
/// a newer controller does not break an older CLI.
async fn follow(client: &Client, id: &str, progress: &mut dyn Progress) -> Result<(), CliError> {
    let path = format!("/api/loads/{}/events", path_segment(id));
    let mut events = std::pin::pin!(client.events(&path).await?);
    while let Some(item) = events.next().await {
        let (name, data) = item?;
        let ev: LoadEvent = match serde_json::from_str(&data) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(%name, %data, "skipping an event this CLI does not understand: {e}");
                continue;
            }
        };
        progress.event(&ev);
        if matches!(ev, LoadEvent::Done { .. }) {
            return Ok(());
        }
    }
    Err(CliError::Server(
        "the event stream ended before the load was done".into(),
    ))
}

/// The load's status once it is done or failed (at once after a `done` event; by polling if
/// the event stream broke off).
async fn wait_terminal(client: &Client, id: &str) -> Result<LoadStatus, CliError> {
    let path = format!("/api/loads/{}", path_segment(id));
    loop {
        let status: LoadStatus = client.get_json(&path, &[]).await?;
        if status.state.is_terminal() {
            return Ok(status);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn print_status(status: &LoadStatus, json: bool) -> Result<(), CliError> {
    if json {
        let text = serde_json::to_string_pretty(status)
            .map_err(|e| CliError::Server(format!("cannot print the load as JSON: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    if !status.reports.is_empty() {
        println!("{}", reports_table(&status.reports));
    }
    for note in load_notes(status) {
        println!("{note}");
    }
    Ok(())
}

/// How a finished load ends the command. When several things went wrong, the highest exit code
/// wins (server 5 over page 4 over no agent 3): the cause furthest from the user's control.
pub fn outcome(status: &LoadStatus) -> Result<(), CliError> {
    if !status.state.is_terminal() {
        return Err(CliError::Server(format!(
            "the load {} is still {}",
            status.id,
            status.state.as_str()
        )));
    }
    let mut errors: Vec<CliError> = Vec::new();
    if let Some(f) = &status.failure {
        errors.push(CliError::from_failure("the load", f));
    }
    for t in &status.targets {
        if let Some(f) = &t.failure {
            errors.push(CliError::from_failure(&format!("region {}", t.region), f));
        }
    }
    for r in &status.reports {
        if every_run_failed(&r.report) {
            let first = r.report.runs.iter().find_map(|run| run.error.as_deref());
            errors.push(CliError::Page(format!(
                "every run failed in {}: {}",
                r.region,
                first.unwrap_or("no details")
            )));
        }
    }
    if errors.is_empty() && status.state == vantage_proto::api::LoadState::Failed {
        errors.push(CliError::Server(format!(
            "the load {} failed without saying why",
            status.id
        )));
    }
    match errors.into_iter().max_by_key(CliError::exit_code) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::api::{Failure, FailureKind, LoadState, TargetStatus};

    fn status(
        state: LoadState,
        failure: Option<FailureKind>,
        targets: Vec<Option<FailureKind>>,
    ) -> LoadStatus {
        let f = |kind| Failure {
            kind,
            message: "why".into(),
        };
        LoadStatus {
            id: "l1".into(),
            state,
            created_unix_ms: 0,
            finished_unix_ms: None,
            request: LoadRequest::new("https://example.com/"),
            targets: targets
                .into_iter()
                .enumerate()
                .map(|(i, k)| TargetStatus {
                    region: format!("r{i}"),
                    state,
                    attempts: vec![],
                    note: None,
                    report_id: None,
                    failure: k.map(f),
                })
                .collect(),
            failure: failure.map(f),
            reports: vec![],
        }
    }

    #[test]
    fn load_outcomes_map_to_exit_codes() {
        assert!(outcome(&status(LoadState::Done, None, vec![None])).is_ok());
        let code = |s: LoadStatus| outcome(&s).unwrap_err().exit_code();
        assert_eq!(
            code(status(
                LoadState::Failed,
                Some(FailureKind::NoAgent),
                vec![]
            )),
            3
        );
        assert_eq!(
            code(status(LoadState::Failed, Some(FailureKind::Page), vec![])),
            4
        );
        assert_eq!(
            code(status(
                LoadState::Failed,
                Some(FailureKind::Rejected),
                vec![]
            )),
            4
        );
        assert_eq!(
            code(status(
                LoadState::Failed,
                Some(FailureKind::AgentLost),
                vec![]
            )),
            5
        );
        assert_eq!(
            code(status(
                LoadState::Failed,
                Some(FailureKind::ControllerRestart),
                vec![]
            )),
            5
        );
        assert_eq!(code(status(LoadState::Failed, None, vec![])), 5);
        assert_eq!(code(status(LoadState::Running, None, vec![])), 5);
        assert_eq!(
            code(status(
                LoadState::Done,
                None,
                vec![None, Some(FailureKind::NoAgent), Some(FailureKind::Page)]
            )),
            4,
            "the highest code of the regions' failures"
        );
    }

    #[test]
    fn flags_make_the_request() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct T {
            #[command(flatten)]
            load: LoadArgs,
        }
        let t = T::try_parse_from([
            "t",
            "https://example.com/",
            "--from",
            "sin,ams",
            "--runs",
            "3",
            "--viewport",
            "390x844",
            "--timeout",
            "30s",
            "--wait",
            "quiet:3000",
            "--strict",
        ])
        .unwrap();
        let r = t.load.request();
        assert_eq!(r.from, FromSpec::Text("sin,ams".into()));
        assert_eq!(r.runs, 3);
        assert_eq!(r.viewport.unwrap().width, 390);
        assert_eq!(r.timeout, Some(30_000));
        assert_eq!(r.wait, Some(Wait::LoadAndQuiet { quiet_ms: 3_000 }));
        assert!(r.strict);
        for bad in [
            vec!["t", "u", "--runs", "10"],
            vec!["t", "u", "--from", "all,sin"],
            vec!["t", "u", "--timeout", "500ms"],
        ] {
            let e = T::try_parse_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2);
        }
    }
}
