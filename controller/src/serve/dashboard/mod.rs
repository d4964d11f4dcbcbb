//! The dashboard: server-rendered pages for people (Fleet, Run a load, History, the report
//! pages), a login form that turns the API token into an HttpOnly SameSite=Strict cookie, and
//! one small dependency-free script for the live progress of a load.

mod fleet;
mod history;
mod projection;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::api::{given_token, same_origin, token_matches, AppState, TOKEN_COOKIE};
use super::pages;
use crate::report::html::{document, esc};
use vantage_proto::api::ErrorBody;

/// What the dashboard's pages may do: their own script and API calls, inline styles, `data:`
/// images, forms to themselves; nothing else, and no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; img-src data:; \
style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const SCRIPT: &str = include_str!("dashboard.js");

/// The dashboard's routes: `/login` open, every other page behind the cookie (or a bearer).
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/fleet") }))
        .route("/fleet", get(fleet::page))
        .route("/run", get(run_page))
        .route("/history", get(history::page))
        .route("/compare", get(history::compare))
        .route("/reports/{id}", get(pages::report))
        .route("/loads/{id}/report", get(pages::load_report))
        .route_layer(axum::middleware::map_response(errors_as_pages))
        .route_layer(axum::middleware::from_fn_with_state(state, page_auth));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/dashboard.js", get(script))
        .merge(pages)
}

/// Pages need the token like the API; without it a person is sent to the login form.
async fn page_auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let ok = given_token(req.headers()).is_some_and(|(t, _)| token_matches(&s, &t));
    if ok {
        next.run(req).await
    } else {
        Redirect::to("/login").into_response()
    }
}

/// A dashboard page: navigation, then `body`.
pub(super) fn shell(title: &str, body: &str) -> Response {
    let nav = "<nav><a href=\"/fleet\">Fleet</a><a href=\"/run\">Run a load</a>\
<a href=\"/history\">History</a><form method=\"post\" action=\"/logout\" style=\"display:inline\">\
<button type=\"submit\">Log out</button></form></nav>";
    pages::html_response(document(
        &format!("Vantage: {title}"),
        CSP,
        &format!("{nav}\n<h1>{}</h1>\n{body}", esc(title)),
    ))
}

/// A page's error (no such report, a bad id, a full disk) is a page too, with the API's status
/// and message: a person who followed a stale link reads what happened, not a JSON body.
async fn errors_as_pages(r: Response) -> Response {
    let status = r.status();
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !json {
        return r;
    }
    // the API's error bodies are a code and one sentence
    let body = axum::body::to_bytes(r.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| status.to_string());
    let mut page = shell(
        status.canonical_reason().unwrap_or("Error"),
        &format!("<p class=\"bad\" id=\"error\">{}</p>", esc(&message)),
    );
    *page.status_mut() = status;
    page
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

fn login_body(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"bad\" id=\"login-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<h1>Vantage</h1>{error}<form method=\"post\" action=\"/login\" id=\"login\">\
<label>API token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\">Log in</button></form>\
<p class=\"mut\">The token is the controller's VANTAGE_API_TOKEN; it is kept in an HttpOnly cookie.</p>"
    )
}

async fn login_form() -> Response {
    pages::html_response(document("Vantage: log in", CSP, &login_body(None)))
}

/// `POST /login` with `token=…`: a cookie and the fleet page, or the form again with what was
/// wrong. Cross-origin posts are refused (login CSRF).
async fn login(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "cross-origin login refused: the form must be posted from this controller's own page",
        )
            .into_response();
    }
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !token_matches(&s, &token) {
        let page = document(
            "Vantage: log in",
            CSP,
            &login_body(Some(
                "wrong token: it does not match the controller's VANTAGE_API_TOKEN",
            )),
        );
        return (StatusCode::UNAUTHORIZED, pages::html_response(page)).into_response();
    }
    let value: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let secure = if over_https(&headers) { "; Secure" } else { "" };
    let cookie = format!("{TOKEN_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{secure}");
    with_cookie(Redirect::to("/fleet").into_response(), &cookie)
}

/// Whether the person reached the controller over HTTPS: the login form's own origin says so
/// (the post is refused unless it is this controller's), as does a TLS proxy in front (Fly's
/// sets `X-Forwarded-Proto`). The cookie then never travels in clear text.
fn over_https(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    value(header::ORIGIN.as_str()).is_some_and(|o| o.starts_with("https://"))
        || value("x-forwarded-proto").is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin logout refused").into_response();
    }
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    with_cookie(Redirect::to("/login").into_response(), &cookie)
}

fn with_cookie(mut r: Response, cookie: &str) -> Response {
    // a token is printable by the API's rules and percent-encoded here, so this cannot fail
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Run a load: the form; `dashboard.js` submits it through the API, follows the load's events
/// and opens its report when it is done.
async fn run_page(State(s): State<AppState>) -> Response {
    let view = s.orch.fleet();
    let regions = view.placement.known_regions();
    let body = format!(
        "<form id=\"run-form\">\
<label>URL <input type=\"url\" name=\"url\" required size=\"50\" placeholder=\"https://example.com/\"></label>\
<label>From <input name=\"from\" value=\"all\" size=\"30\"></label>\
<p class=\"mut\">Region codes separated by commas, <code>all</code> or <code>nearest</code>. Known: {}</p>\
<label>Runs <input type=\"number\" name=\"runs\" value=\"1\" min=\"1\" max=\"9\"></label>\
<label><input type=\"checkbox\" name=\"screenshot\" checked> Screenshot</label>\
<button type=\"submit\">Run</button></form>\
<h2>Progress</h2><ol id=\"progress\"></ol><script src=\"/dashboard.js\"></script>",
        esc(&regions.into_iter().collect::<Vec<_>>().join(", "))
    );
    shell("Run a load", &body)
}
