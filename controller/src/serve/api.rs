//! The HTTP API: routes, the bearer token, the one error type, and the OpenAPI document.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddrV6;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, RawQuery, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::OpenApi;
use vantage_fleet::tags::{self, ports, Role};
use vantage_proto::api::{
    ControllerHealth, CoordinateInfo, ErrorBody, LoadAccepted, LoadEvent, LoadRequest, LoadStatus,
    MemberInfo, RegionInfo, ReportSummary, RttAnswer, StoredReport, MAX_BODY,
};
use vantage_proto::netpolicy::Policy;

use super::fleet::FleetView;
use super::orchestrator::{Orchestrator, SubmitError};
use super::placement::PlaceError;
use super::store::StoreError;
use super::validate::{self, Invalid};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub orch: Orchestrator,
    pub token: Arc<str>,
    pub policy: Arc<Policy>,
    /// `host:port`s the agents are pinned to reach (not resolved here).
    pub pinned: Arc<Vec<(String, u16)>>,
    pub node: vantage_mesh::Node,
    pub name: String,
    pub region: String,
}

/// The API's one error: a status, a stable code and a message for people. Internals are logged,
/// never sent.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the controller's log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.into(),
            error: self.message,
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full(_) => {
                tracing::error!(error = %e, "store full");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    "the controller's disk is full; nothing was accepted or lost",
                )
            }
            e => Self::internal(e),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Place(p @ PlaceError::UnknownRegion { .. }) => {
                Self::new(StatusCode::BAD_REQUEST, "unknown_region", p.to_string())
            }
            SubmitError::Place(p) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_agent", p.to_string())
            }
            e @ SubmitError::TooMany(_) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_loads",
                e.to_string(),
            ),
            SubmitError::Store(s) => s.into(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::Field(m) => Self::bad(m),
            Invalid::Target(m) => Self::new(StatusCode::BAD_REQUEST, "forbidden_target", m),
        }
    }
}

/// The routes, with the token required on all but `/healthz` and the OpenAPI document.
pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/api/loads", post(post_load))
        .route("/api/loads/{id}", get(get_load))
        .route("/api/loads/{id}/events", get(load_events))
        .route("/api/loads/{id}/har", get(super::pages::load_har))
        .route("/api/reports", get(list_reports))
        .route("/api/reports/{id}", get(get_report))
        .route("/api/members", get(members))
        .route("/api/rtt", get(rtt))
        .route("/api/regions", get(regions))
        .route("/api/cdp/{member}", get(cdp))
        .route("/api/cdp/{member}/version", get(cdp_version))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/openapi.json", get(openapi))
        .merge(authed)
        .merge(super::dashboard::routes(state.clone()))
        .fallback(|| async {
            ApiError::not_found("no such route; the API is listed at /api/openapi.json")
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The cookie the dashboard's login sets to the API token (HttpOnly, SameSite=Strict).
pub const TOKEN_COOKIE: &str = "vantage_token";

/// The token a request carries: `Authorization: Bearer …`, else the dashboard's cookie (whose
/// value is the percent-encoded token); `true` when it came from the cookie.
pub(super) fn given_token(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(b) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some((b.to_owned(), false));
    }
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))?;
    let decoded = form_urlencoded::parse(format!("t={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    Some((decoded, true))
}

/// Compares in constant time.
pub(super) fn token_matches(s: &AppState, given: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(s.token.as_bytes()))
}

/// A request that changes something, authenticated by the cookie, must come from a page of this
/// controller: its `Origin` names the host it was sent to. SameSite=Strict already keeps the
/// cookie off cross-site requests; this also covers same-site neighbours and old browsers.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host),
        _ => false,
    }
}

/// Checks the token (bearer or the dashboard's cookie) in constant time, and the origin of
/// cookie-authenticated requests that are not reads.
async fn auth(State(s): State<AppState>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = given_token(&headers);
    let ok = given.as_ref().is_some_and(|(g, _)| token_matches(&s, g));
    if ok {
        let by_cookie = given.as_ref().is_some_and(|(_, c)| *c);
        if by_cookie && !req.method().is_safe() && !same_origin(&headers) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "cross-origin request refused: a request authenticated by the dashboard cookie \
must carry an Origin equal to this controller's address",
            )
            .into_response();
        }
        return next.run(req).await;
    }
    let message = match given {
        None => {
            "missing token: send `Authorization: Bearer <VANTAGE_API_TOKEN>`, or log in at /login"
        }
        Some(_) => "wrong token: it does not match the controller's VANTAGE_API_TOKEN",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Vantage controller API",
        description = "Load a page from anywhere and read how it loaded and why. Every /api route but this document needs `Authorization: Bearer <token>`."
    ),
    paths(
        post_load,
        get_load,
        load_events,
        super::pages::load_har,
        list_reports,
        get_report,
        members,
        rtt,
        regions,
        cdp,
        cdp_version,
        healthz,
        metrics
    ),
    components(schemas(
        LoadRequest,
        LoadAccepted,
        LoadStatus,
        LoadEvent,
        StoredReport,
        ReportSummary,
        MemberInfo,
        RegionInfo,
        RttAnswer,
        ErrorBody,
        ControllerHealth
    ))
)]
pub struct ApiDoc;

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = ControllerHealth)))]
async fn healthz(State(s): State<AppState>) -> Json<ControllerHealth> {
    let view = s.orch.fleet();
    Json(ControllerHealth {
        status: "ok".into(),
        name: s.name.clone(),
        region: s.region.clone(),
        members: view.members.iter().filter(|m| m.state.is_live()).count(),
        healthy_agents: view.healthy_agents().count(),
        loads_in_flight: s.orch.in_flight(),
    })
}

/// Reads a JSON body; a body over the limit is 413, anything malformed 400 with serde's words.
fn json_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is over the {MAX_BODY} byte limit"),
            )
        } else {
            ApiError::bad(format!("cannot read the request body: {r}"))
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

#[utoipa::path(post, path = "/api/loads", request_body = LoadRequest,
    responses((status = 202, body = LoadAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn post_load(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: LoadRequest = json_body(body)?;
    let v = validate::job_of(&req)?;
    validate::check_target(&v.job.url, &s.policy, &s.pinned).await?;
    let id = s.orch.submit(v).await?;
    let location = format!("/api/loads/{id}");
    let mut r = (
        StatusCode::ACCEPTED,
        Json(LoadAccepted {
            id,
            location: location.clone(),
        }),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

#[utoipa::path(get, path = "/api/loads/{id}", params(("id" = String, Path)),
    responses((status = 200, body = LoadStatus), (status = 404, body = ErrorBody)))]
async fn get_load(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LoadStatus>, ApiError> {
    super::pages::load(&s, &id).await.map(Json)
}

#[utoipa::path(get, path = "/api/loads/{id}/events", params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream of LoadEvent, ending with `done`", body = LoadEvent)))]
async fn load_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let events: std::pin::Pin<Box<dyn Stream<Item = LoadEvent> + Send>> =
        match s.orch.subscribe(&id) {
            Some((past, rx)) => {
                let finished = past.iter().any(|e| matches!(e, LoadEvent::Done { .. }));
                let live = tokio_stream_of(rx);
                let past = stream::iter(past);
                if finished {
                    Box::pin(past)
                } else {
                    Box::pin(past.chain(live))
                }
            }
            None => {
                let load = s
                    .orch
                    .store()
                    .load(id.clone())
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("no load `{id}`")))?;
                Box::pin(stream::iter(replay(&load)))
            }
        };
    // the stream ends with the `done` event
    let mut over = false;
    let events = events.take_while(move |e| {
        let keep = !over;
        over |= matches!(e, LoadEvent::Done { .. });
        std::future::ready(keep)
    });
    let sse = events.map(|e| {
        Ok(SseEvent::default()
            .event(e.name())
            .data(serde_json::to_string(&e).unwrap_or_default()))
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()))
}

fn tokio_stream_of(
    rx: tokio::sync::broadcast::Receiver<LoadEvent>,
) -> impl Stream<Item = LoadEvent> + Send {
    stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The events of a load that is over (or left by a previous run), from its stored state.
fn replay(load: &LoadStatus) -> Vec<LoadEvent> {
    let mut out = vec![LoadEvent::Queued {
        id: load.id.clone(),
    }];
    for t in &load.targets {
        match (t.report_id, &t.failure) {
            (Some(report_id), _) => out.push(LoadEvent::TargetDone {
                region: t.region.clone(),
                report_id,
            }),
            (None, Some(f)) => out.push(LoadEvent::TargetFailed {
                region: t.region.clone(),
                failure: f.clone(),
            }),
            _ => {}
        }
    }
    if load.state.is_terminal() {
        out.push(LoadEvent::Done {
            state: load.state,
            failure: load.failure.clone(),
        });
    }
    out
}

#[derive(Debug, Deserialize)]
struct ReportQuery {
    url: Option<String>,
    region: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/reports", params(("url" = Option<String>, Query), ("region" = Option<String>, Query), ("limit" = Option<usize>, Query, description = "1 to 1000, default 50")),
    responses((status = 200, body = [ReportSummary])))]
async fn list_reports(
    State(s): State<AppState>,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ReportSummary>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad(format!(
            "limit is {limit}; accepted is 1 to 1000"
        )));
    }
    Ok(Json(s.orch.store().reports(q.url, q.region, limit).await?))
}

#[utoipa::path(get, path = "/api/reports/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = StoredReport), (status = 404, body = ErrorBody)))]
async fn get_report(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StoredReport>, ApiError> {
    super::pages::stored_report(&s, &id).await.map(Json)
}

#[utoipa::path(get, path = "/api/members", params(("tag" = Option<String>, Query, description = "`key=value`, repeatable; all must match")),
    responses((status = 200, body = [MemberInfo])))]
async fn members(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<MemberInfo>>, ApiError> {
    let mut filters = Vec::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        if k != "tag" {
            return Err(ApiError::bad(format!(
                "unknown query parameter `{k}`; accepted is tag=key=value"
            )));
        }
        let (tk, tv) = v
            .split_once('=')
            .ok_or_else(|| ApiError::bad(format!("tag filter `{v}` must be key=value")))?;
        filters.push((tk.to_owned(), tv.to_owned()));
    }
    let view = s.orch.fleet();
    let out = member_infos(&view)
        .into_iter()
        .filter(|m| filters.iter().all(|(k, v)| m.tags.get(k) == Some(v)))
        .collect();
    Ok(Json(out))
}

/// Every member as `/api/members` and the dashboard's fleet page show it.
pub(super) fn member_infos(view: &FleetView) -> Vec<MemberInfo> {
    let me = view.coordinate(&view.me).cloned();
    view.members
        .iter()
        .map(|m| {
            let c = view.coordinate(&m.name);
            MemberInfo {
                name: m.name.clone(),
                addr: m.addr.to_string(),
                state: state_name(m.state).into(),
                tags: m.tags.clone(),
                coordinate: c.map(|c| CoordinateInfo {
                    vec: c.vec().to_vec(),
                    error: c.error(),
                    adjustment: c.adjustment(),
                    height: c.height(),
                }),
                rtt_ms: me
                    .as_ref()
                    .zip(c)
                    .filter(|_| m.name != view.me)
                    .map(|(a, b)| {
                        vantage_gossip::coordinate::estimate_rtt(a, b).as_secs_f64() * 1e3
                    }),
            }
        })
        .collect()
}

fn state_name(s: vantage_gossip::State) -> &'static str {
    match s {
        vantage_gossip::State::Alive => "alive",
        vantage_gossip::State::Suspect => "suspect",
        vantage_gossip::State::Dead => "failed",
        vantage_gossip::State::Left => "left",
    }
}

/// A member by name, or the healthiest member in a region of that name.
fn resolve<'a>(
    view: &'a FleetView,
    what: &str,
    agents_only: bool,
) -> Result<&'a vantage_gossip::Member, ApiError> {
    if let Some(m) = view.member(what) {
        if !agents_only || Role::of(&m.tags) == Some(Role::Agent) {
            return Ok(m);
        }
    }
    let in_region = |m: &&vantage_gossip::Member| {
        m.tags.get(tags::REGION).map(String::as_str) == Some(what)
            && (!agents_only || Role::of(&m.tags) == Some(Role::Agent))
    };
    let mut found: Vec<&vantage_gossip::Member> = view.members.iter().filter(in_region).collect();
    found.sort_by_key(|m| {
        (
            !super::fleet::is_healthy(m),
            m.state != vantage_gossip::State::Alive,
            m.name.clone(),
        )
    });
    found.first().copied().ok_or_else(|| {
        let regions: std::collections::BTreeSet<&str> = view
            .members
            .iter()
            .filter_map(|m| m.tags.get(tags::REGION).map(String::as_str))
            .collect();
        ApiError::not_found(format!(
            "no {} or region `{what}`; regions: {}",
            if agents_only { "agent" } else { "member" },
            regions.into_iter().collect::<Vec<_>>().join(", ")
        ))
    })
}

#[derive(Debug, Deserialize)]
struct RttQuery {
    a: Option<String>,
    b: Option<String>,
}

#[utoipa::path(get, path = "/api/rtt", params(("a" = String, Query, description = "member name or region"), ("b" = Option<String>, Query, description = "member name or region; default: this controller")),
    responses((status = 200, body = RttAnswer), (status = 404, body = ErrorBody)))]
async fn rtt(
    State(s): State<AppState>,
    q: Result<Query<RttQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RttAnswer>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let a =
        q.a.ok_or_else(|| ApiError::bad("give `a` (a member name or region)"))?;
    let view = s.orch.fleet();
    let b = q.b.unwrap_or_else(|| view.me.clone());
    let ma = resolve(&view, &a, false)?;
    let mb = resolve(&view, &b, false)?;
    let (Some(ca), Some(cb)) = (view.coordinate(&ma.name), view.coordinate(&mb.name)) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_coordinates",
            format!(
                "no network coordinates yet for {} or {}; they settle within a minute of joining",
                ma.name, mb.name
            ),
        ));
    };
    Ok(Json(RttAnswer {
        a,
        b,
        a_member: ma.name.clone(),
        b_member: mb.name.clone(),
        rtt_ms: vantage_gossip::coordinate::estimate_rtt(ca, cb).as_secs_f64() * 1e3,
    }))
}

#[utoipa::path(get, path = "/api/regions", responses((status = 200, body = [RegionInfo])))]
async fn regions(State(s): State<AppState>) -> Json<Vec<RegionInfo>> {
    let view = s.orch.fleet();
    let mut by: BTreeMap<String, RegionInfo> = BTreeMap::new();
    for region in view.placement.known_regions() {
        by.insert(
            region.clone(),
            RegionInfo {
                region,
                healthy_agents: 0,
                agents: 0,
            },
        );
    }
    for a in &view.placement.agents {
        let r = by.entry(a.region.clone()).or_insert_with(|| RegionInfo {
            region: a.region.clone(),
            healthy_agents: 0,
            agents: 0,
        });
        r.agents += 1;
        r.healthy_agents += usize::from(a.healthy);
    }
    Json(by.into_values().collect())
}

fn gateway_of(m: &vantage_gossip::Member) -> Result<SocketAddrV6, ApiError> {
    match m.addr {
        std::net::SocketAddr::V6(a) => Ok(SocketAddrV6::new(*a.ip(), ports::CDP, 0, 0)),
        _ => Err(ApiError::internal(format!(
            "{} has no overlay address",
            m.name
        ))),
    }
}

#[utoipa::path(get, path = "/api/cdp/{member}", params(("member" = String, Path, description = "agent name or region")),
    responses((status = 101, description = "WebSocket: the browser's raw CDP"), (status = 404, body = ErrorBody)))]
async fn cdp(
    State(s): State<AppState>,
    Path(member): Path<String>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let view = s.orch.fleet();
    let m = resolve(&view, &member, true)?;
    let gw = gateway_of(m)?;
    let ws = ws.map_err(|e| {
        ApiError::bad(format!(
            "{e}; use /api/cdp/{member}/version for the browser's details"
        ))
    })?;
    let node = s.node.clone();
    tracing::info!(member = %m.name, "cdp session opened");
    Ok(ws
        .max_message_size(super::cdp::MAX_MESSAGE)
        .max_frame_size(super::cdp::MAX_MESSAGE)
        .on_upgrade(move |socket| super::cdp::relay(socket, node, gw)))
}

#[utoipa::path(get, path = "/api/cdp/{member}/version", params(("member" = String, Path, description = "agent name or region")),
    responses((status = 200, description = "the browser's /json/version", body = Object), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn cdp_version(
    State(s): State<AppState>,
    Path(member): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = s.orch.fleet();
    let m = resolve(&view, &member, true)?;
    let gw = gateway_of(m)?;
    let name = m.name.clone();
    let v = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        super::cdp::version(&s.node, gw),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_unreachable",
            format!("{name} did not answer within 10 s"),
        )
    })?
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_unreachable",
            format!("{name}: {e:#}"),
        )
    })?;
    Ok(Json(v))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", body = String)))]
async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let loads = s.orch.store().count_by_state().await?;
    let view = s.orch.fleet();
    let mut members: BTreeMap<String, u64> = BTreeMap::new();
    for m in &view.members {
        *members.entry(state_name(m.state).into()).or_default() += 1;
    }
    let body = s.orch.metrics().render(&loads, &members);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
