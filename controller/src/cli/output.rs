//! The output flags `vantage load` and `vantage demo` share: `--json` on stdout, and files of the
//! finished load as HAR (`--har`) and as the HTML report (`--html`).

use std::path::{Path, PathBuf};

use vantage_proto::api::LoadStatus;

use super::error::CliError;
use crate::report::{har, html};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Print the load's status as JSON on stdout instead of the table, and no progress. Its
    /// schema is docs/load-status.schema.json (versioned with the report's `schema` field).
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
