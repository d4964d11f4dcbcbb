//! The one error type of the CLI. Each variant is an exit code, so a script can tell "fix your
//! command" from "no agent could take it" from "the page is broken" from "the controller or the
//! network is down" without parsing messages.

use vantage_proto::api::{ErrorBody, Failure, FailureKind};

/// Exit code of a successful command.
pub const EXIT_OK: u8 = 0;
/// `serve` or a key command stopped with an error.
pub const EXIT_FAILED: u8 = 1;
/// Bad flags, or a request the controller refused as bad input (400, 401, 404, 413).
pub const EXIT_USAGE: u8 = 2;
/// No eligible agent (503 `no_agent`, or a load that failed with `no_agent`).
pub const EXIT_NO_AGENT: u8 = 3;
/// The page failed: every run of a region's report has an error, or the load failed with
/// `page` or `rejected`.
pub const EXIT_PAGE: u8 = 4;
/// The controller or the network failed: 5xx, 429, unreachable, `agent_lost`,
/// `controller_restart`, `internal`.
pub const EXIT_SERVER: u8 = 5;

/// What went wrong, in words that start lowercase and end without a period.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command or what it sent was wrong.
    #[error("{0}")]
    Usage(String),
    /// No agent could take the load.
    #[error("{0}")]
    NoAgent(String),
    /// The page could not be loaded.
    #[error("{0}")]
    Page(String),
    /// The controller, the agents or the network between failed.
    #[error("{0}")]
    Server(String),
    /// `serve` or a key command failed; the chain is shown with `{:#}`.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::NoAgent(_) => EXIT_NO_AGENT,
            CliError::Page(_) => EXIT_PAGE,
            CliError::Server(_) => EXIT_SERVER,
            CliError::Failed(_) => EXIT_FAILED,
        }
    }

    /// Maps an error answer of the API (status and body) to an error a user can act on.
    pub fn from_api(status: u16, body: &ErrorBody) -> CliError {
        let detail = trim_message(&body.error);
        let code = body.code.as_str();
        match (status, code) {
            (401, _) => {
                CliError::Usage(format!("the controller refused the token (401): {detail}"))
            }
            (404, _) => CliError::Usage(format!("not found (404 {code}): {detail}")),
            (413, _) => CliError::Usage(format!("the request is too large (413): {detail}")),
            (400, _) => CliError::Usage(format!(
                "the controller refused the request (400 {code}): {detail}"
            )),
            (_, "no_agent") => CliError::NoAgent(format!("no eligible agent ({status}): {detail}")),
            (429, _) => CliError::Server(format!(
                "the controller has too many loads in flight (429): {detail}; try again later"
            )),
            (s, _) if (400..500).contains(&s) => CliError::Usage(format!(
                "the controller refused the request ({s} {code}): {detail}"
            )),
            (s, _) => CliError::Server(format!("the controller failed ({s} {code}): {detail}")),
        }
    }

    /// Maps how a load (or one region of it) failed to the matching exit code.
    pub fn from_failure(what: &str, failure: &Failure) -> CliError {
        let msg = format!(
            "{what} failed ({}): {}",
            failure_kind_name(failure.kind),
            trim_message(&failure.message)
        );
        match failure.kind {
            FailureKind::NoAgent => CliError::NoAgent(msg),
            FailureKind::Page | FailureKind::Rejected => CliError::Page(msg),
            FailureKind::AgentLost | FailureKind::ControllerRestart | FailureKind::Internal => {
                CliError::Server(msg)
            }
        }
    }
}

/// The wire name of a failure kind (`no_agent`, `agent_lost`…).
pub fn failure_kind_name(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::NoAgent => "no_agent",
        FailureKind::AgentLost => "agent_lost",
        FailureKind::Rejected => "rejected",
        FailureKind::Page => "page",
        FailureKind::ControllerRestart => "controller_restart",
        FailureKind::Internal => "internal",
    }
}

/// Server messages are sentences; ours are not, so a final period goes.
fn trim_message(s: &str) -> &str {
    s.trim().trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str) -> ErrorBody {
        ErrorBody {
            code: code.into(),
            error: "Something was wrong.".into(),
        }
    }

    #[test]
    fn api_errors_map_to_exit_codes() {
        let cases = [
            (400, "bad_request", EXIT_USAGE),
            (400, "unknown_region", EXIT_USAGE),
            (400, "forbidden_target", EXIT_USAGE),
            (401, "unauthorized", EXIT_USAGE),
            (404, "not_found", EXIT_USAGE),
            (413, "too_large", EXIT_USAGE),
            (429, "too_many_loads", EXIT_SERVER),
            (503, "no_agent", EXIT_NO_AGENT),
            (500, "internal", EXIT_SERVER),
            (502, "bad_gateway", EXIT_SERVER),
        ];
        for (status, code, exit) in cases {
            assert_eq!(
                CliError::from_api(status, &body(code)).exit_code(),
                exit,
                "{status} {code}"
            );
        }
        let e = CliError::from_api(401, &body("unauthorized")).to_string();
        assert_eq!(
            e,
            "the controller refused the token (401): Something was wrong"
        );
    }

    #[test]
    fn failures_map_to_exit_codes() {
        let cases = [
            (FailureKind::NoAgent, EXIT_NO_AGENT),
            (FailureKind::Page, EXIT_PAGE),
            (FailureKind::Rejected, EXIT_PAGE),
            (FailureKind::AgentLost, EXIT_SERVER),
            (FailureKind::ControllerRestart, EXIT_SERVER),
            (FailureKind::Internal, EXIT_SERVER),
        ];
        for (kind, exit) in cases {
            let f = Failure {
                kind,
                message: "it broke".into(),
            };
            assert_eq!(CliError::from_failure("the load", &f).exit_code(), exit);
        }
        let f = Failure {
            kind: FailureKind::AgentLost,
            message: "the job stream was silent for 3 s.".into(),
        };
        assert_eq!(
            CliError::from_failure("the load", &f).to_string(),
            "the load failed (agent_lost): the job stream was silent for 3 s"
        );
    }
}
