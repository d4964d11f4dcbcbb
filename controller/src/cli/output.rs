//! The output flags `vantage load` and `vantage demo` share: `--json` on stdout, and files of the
//! finished load as HAR (`--har`) and as the HTML report (`--html`).

use std::path::{Path, PathBuf};

use vantage_proto::api::LoadStatus;

use super::error::CliError;
use crate::report::{har, html};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Print the load's status as JSON on stdout instead of the table, and no progress: the API's
    /// `LoadStatus`, as the JSON Schema docs/schema/load.schema.json describes it.
    #[arg(long)]
    pub json: bool,
    /// Also write the load as HAR 1.2 (every region and run) to FILE.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,
    /// Also write the load as one self-contained HTML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl OutputArgs {
    /// Writes the files asked for. A failed load is written too: its report says what failed.
    pub fn write_files(&self, status: &LoadStatus) -> Result<(), CliError> {
        if let Some(path) = &self.har {
            write(path, "HAR", &har::load_har(status))?;
        }
        if let Some(path) = &self.html {
            write(path, "HTML report", html::load_html(status).as_bytes())?;
        }
        Ok(())
    }
}

fn write(path: &Path, what: &str, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|e| {
        CliError::Usage(format!(
            "cannot write the {what} to {}: {e}",
            path.display()
        ))
    })?;
    tracing::info!(path = %path.display(), "{what} written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use vantage_proto::api::{LoadRequest, LoadState};

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        out: OutputArgs,
    }

    #[test]
    fn files_are_written_and_a_bad_path_is_a_usage_error() {
        let dir = std::env::temp_dir().join(format!("vantage-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (har, html) = (dir.join("l.har"), dir.join("l.html"));
        let t = T::try_parse_from([
            "t",
            "--har",
            har.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ])
        .unwrap();
        let status = LoadStatus {
            id: "l1".into(),
            state: LoadState::Failed,
            created_unix_ms: 0,
            finished_unix_ms: Some(1),
            request: LoadRequest::new("https://example.com/"),
            targets: vec![],
            failure: None,
            reports: vec![],
        };
        t.out.write_files(&status).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
        assert_eq!(v["log"]["version"], "1.2");
        assert!(std::fs::read_to_string(&html)
            .unwrap()
            .starts_with("<!DOCTYPE html>"));
        let bad = T::try_parse_from(["t", "--har", "/nonexistent-dir/x.har"]).unwrap();
        let e = bad.out.write_files(&status).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("/nonexistent-dir/x.har"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
