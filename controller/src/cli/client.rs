//! The HTTP client of the controller's API: one place that adds the token, decodes answers and
//! turns the API's `ErrorBody` answers and network failures into [`CliError`]s.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vantage_proto::api::ErrorBody;

use super::error::CliError;

/// How long to wait for a TCP (and TLS) connection to the controller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordinary API call may take; event streams have no such limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one controller, with its token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    base: String,
    token: String,
}

impl Client {
    /// Checks that `server` is an http(s) URL; nothing is sent yet.
    pub fn new(server: &str, token: &str) -> Result<Client, CliError> {
        let base = server.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| CliError::Usage(format!("--server `{server}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(CliError::Usage(format!(
                "--server `{server}` must be an http:// or https:// URL with a host"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("vantage/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Server(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: token.to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// `GET path?query` and decode the JSON answer.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CliError> {
        let req = self
            .http
            .get(self.url(path))
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        decode(resp).await
    }

    /// `POST path` with a JSON body and decode the JSON answer.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let req = self
            .http
            .post(self.url(path))
            .json(body)
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        decode(resp).await
    }

    /// `GET path` as Server-Sent Events: each item is the event name and its data.
    pub async fn events(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<(String, String), CliError>> + use<>, CliError> {
        use eventsource_stream::Eventsource;
        let req = self
            .http
            .get(self.url(path))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let resp = self.send(req).await?;
        let base = self.base.clone();
        Ok(resp.bytes_stream().eventsource().map(move |item| {
            item.map(|ev| (ev.event, ev.data))
                .map_err(|e| CliError::Server(format!("the event stream from {base} broke: {e}")))
        }))
    }

    /// Sends with the token; an answer other than 2xx becomes the matching error.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.network_error(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Err(error_answer(status, &text))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn network_error(&self, e: &reqwest::Error) -> CliError {
        // reqwest's own words repeat the URL; its sources say why ("Connection refused")
        let mut why: Vec<String> = Vec::new();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            why.push(s.to_string());
            src = s.source();
        }
        let why = if why.is_empty() {
            e.to_string()
        } else {
            why.join(": ")
        };
        if e.is_timeout() {
            CliError::Server(format!(
                "the controller at {} did not answer in time: {why}",
                self.base
            ))
        } else {
            CliError::Server(format!(
                "cannot reach the controller at {}: {why}",
                self.base
            ))
        }
    }
}

/// An error answer: the API's `ErrorBody` if it is one, else the status and the text.
pub fn error_answer(status: u16, text: &str) -> CliError {
    let body = serde_json::from_str::<ErrorBody>(text).unwrap_or_else(|_| ErrorBody {
        code: "unknown".into(),
        error: if text.trim().is_empty() {
            "no details".into()
        } else {
            text.trim().chars().take(300).collect()
        },
    });
    CliError::from_api(status, &body)
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, CliError> {
    let url = resp.url().path().to_owned();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| CliError::Server(format!("the answer to {url} broke off: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CliError::Server(format!(
            "the controller's answer to {url} is not what this CLI understands ({e}); are both the same version?"
        ))
    })
}

/// Percent-encodes one path segment (member names and ids are plain, but a user may type
/// anything).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_must_be_http() {
        assert!(Client::new("http://127.0.0.1:8080/", "t").is_ok());
        assert_eq!(
            Client::new("http://127.0.0.1:8080/", "t").unwrap().base(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(Client::new("ftp://x", "t").unwrap_err().exit_code(), 2);
        assert_eq!(Client::new("localhost", "t").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn error_answers_without_a_body_still_map() {
        assert_eq!(error_answer(502, "").exit_code(), 5);
        assert_eq!(
            error_answer(404, r#"{"code":"not_found","error":"no member sin-9"}"#).to_string(),
            "not found (404 not_found): no member sin-9"
        );
        assert_eq!(path_segment("sin-1"), "sin-1");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
