//! Reports as people and their tools read them: `GET /api/loads/{id}/har`, and the HTML report
//! pages `GET /reports/{id}` (one region's report) and `GET /loads/{id}/report` (a whole load).
//! The converters are `crate::report`'s; these handlers only fetch and answer.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use vantage_proto::api::{LoadStatus, StoredReport};

use super::api::{ApiError, AppState};
use crate::report::{har, html};

#[utoipa::path(get, path = "/api/loads/{id}/har", params(("id" = String, Path)),
    responses((status = 200, description = "HAR 1.2 of every region and run of the load (application/json); `_region`, `_node`, `_view`, `_estimatedRttMs` carry what HAR has no field for", body = Object),
              (status = 404, body = vantage_proto::api::ErrorBody)))]
pub async fn load_har(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let load = load(&s, &id).await?;
    let body = har::load_har(&load);
    let disposition = format!("attachment; filename=\"vantage-{}.har\"", file_safe(&id));
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// `GET /loads/{id}/report`: the whole load as the HTML report.
pub async fn load_report(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let load = load(&s, &id).await?;
    Ok(html_response(html::load_html(&load)))
}

/// `GET /reports/{id}`: one stored report as the HTML report.
pub async fn report(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = stored_report(&s, &id).await?;
    Ok(html_response(html::report_html(&r)))
}

pub async fn load(s: &AppState, id: &str) -> Result<LoadStatus, ApiError> {
    s.orch
        .store()
        .load(id.to_owned())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no load `{id}`")))
}

pub async fn stored_report(s: &AppState, id: &str) -> Result<StoredReport, ApiError> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::bad(format!("report id `{id}` is not a number")))?;
    s.orch
        .store()
        .report(n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no report {n}")))
}

pub fn html_response(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // the pages are whole documents of our own; nobody may frame them
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// A load id as part of a file name: letters, digits, `-` and `_` only.
fn file_safe(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
