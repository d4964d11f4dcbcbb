//! The test origin (`vantage_tests::origin`) answers exactly what its `Truth` says: first with a
//! raw HTTP/1.1 client, then with real headless Chromium, which must make every expected request
//! exactly once and nothing else — the ground truth a page-load report is later compared to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vantage_tests::origin::{
    Origin, Side, HUGE_BYTES, HUGE_PATH, NEVER_DECLARED_BYTES, NEVER_PATH,
};

/// Generous: only a hang should ever reach it.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    /// Header names as sent, in order.
    names: Vec<String>,
    body: Vec<u8>,
    /// From the request's last byte written to the response's first byte read.
    first_byte: Duration,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    fn content_length(&self) -> anyhow::Result<usize> {
        self.header("content-length")
            .context("no Content-Length")?
            .parse()
            .context("bad Content-Length")
    }
}

/// Connects to `url` (`http://host:port/path`) and sends a GET with `Connection: close`.
async fn send_get(url: &str) -> anyhow::Result<(TcpStream, Instant)> {
    send("GET", url).await
}

/// Connects to `url` and sends a `method` request with `Connection: close`.
async fn send(method: &str, url: &str) -> anyhow::Result<(TcpStream, Instant)> {
    let rest = url.strip_prefix("http://").context("not an http:// URL")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok((stream, Instant::now()))
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    status: u16,
    /// Names in lower case.
    headers: HashMap<String, String>,
    /// Names as sent, in order.
    names: Vec<String>,
    /// Where the body starts in the bytes read.
    body_start: usize,
}

/// Parses the response head at the start of `bytes`; `None` while it is incomplete.
fn parse_head(bytes: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&bytes[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = HashMap::new();
    let mut names = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad header line {line:?}"))?;
        names.push(name.trim().to_owned());
        let old = headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        ensure!(old.is_none(), "header {name} sent twice");
    }
    Ok(Some(Head {
        status,
        headers,
        names,
        body_start: end + 4,
    }))
}

/// A whole GET: reads until the server closes the connection.
async fn get(url: &str) -> anyhow::Result<Response> {
    request("GET", url).await
}

/// A whole request: reads until the server closes the connection.
async fn request(method: &str, url: &str) -> anyhow::Result<Response> {
    let fetch = async {
        let (mut stream, sent) = send(method, url).await?;
        let mut bytes = vec![0u8; 1];
        stream.read_exact(&mut bytes).await.context("no response")?;
        let first_byte = sent.elapsed();
        stream.read_to_end(&mut bytes).await?;
        let head = parse_head(&bytes)?.context("incomplete head")?;
        anyhow::Ok(Response {
            status: head.status,
            headers: head.headers,
            names: head.names,
            body: bytes.split_off(head.body_start),
            first_byte,
        })
    };
    tokio::time::timeout(IO_TIMEOUT, fetch)
        .await
        .with_context(|| format!("{method} {url} timed out"))?
        .with_context(|| format!("{method} {url}"))
}

#[tokio::test]
async fn origin_serves_the_truth() -> anyhow::Result<()> {
    let origin = Origin::start().await?;
    let truth = origin.truth().clone();
    ensure!(truth.requests[0].path == truth.document_path);
    ensure!(truth.requests[0].delay == truth.document_delay);

    for e in &truth.requests {
        let url = origin.expected_url(e);
        let r = get(&url).await?;
        ensure!(
            r.status == e.status,
            "{url}: status {} not {}",
            r.status,
            e.status
        );
        let declared = r.content_length()?;
        ensure!(
            declared == r.body.len() && declared == e.body_bytes,
            "{url}: Content-Length {declared}, body {} bytes, truth {}",
            r.body.len(),
            e.body_bytes
        );
        ensure!(
            r.header("content-type") == Some(e.content_type.as_str()),
            "{url}: Content-Type {:?}",
            r.header("content-type")
        );
        // The delay is a lower bound only: the response can come later, never earlier.
        ensure!(
            r.first_byte >= e.delay,
            "{url}: first byte after {:?}, before the {:?} delay",
            r.first_byte,
            e.delay
        );
        if e.content_type == "image/png" {
            ensure!(r.body.starts_with(b"\x89PNG\r\n\x1a\n"), "{url}: not a PNG");
        }
        // exactly these headers, no Date: the bytes on the wire are the body plus a known head
        let mut want = vec![
            "Cache-Control",
            "Connection",
            "Content-Length",
            "Content-Type",
        ];
        if e.origin == Side::Cross {
            want.push("Access-Control-Allow-Origin");
        }
        if e.path == truth.redirect_from {
            want.push("Location");
        }
        want.sort_unstable();
        let mut names = r.names.clone();
        names.sort_unstable();
        ensure!(names == want, "{url}: headers {:?}", r.names);
        ensure!(r.header("connection") == Some("close"), "{url}: keep-alive");
        let acao = r.header("access-control-allow-origin");
        ensure!(
            (e.origin == Side::Cross) == (acao == Some("*")),
            "{url}: Access-Control-Allow-Origin {acao:?}"
        );
    }

    let redirect = get(&origin.url(&truth.redirect_from)).await?;
    ensure!(redirect.status == 302);
    ensure!(redirect.header("location") == Some(truth.redirect_to.as_str()));
    ensure!(get(&origin.url(&truth.missing_path)).await?.status == 404);
    let page = get(&origin.url(&truth.document_path)).await?;
    ensure!(page.first_byte >= truth.document_delay);
    let html = String::from_utf8(page.body)?;
    ensure!(
        html.contains(&origin.cross_url(&truth.cross_path)),
        "the page does not load the cross-origin script"
    );
    // The servers share no paths: each answers 404 for the other's.
    ensure!(get(&origin.cross_url(&truth.document_path)).await?.status == 404);
    ensure!(get(&origin.url(&truth.cross_path)).await?.status == 404);

    let hits = origin.hits();
    for e in &truth.requests {
        ensure!(
            hits.iter().any(|(p, s)| *p == e.path && *s == e.status),
            "{} missing from hits {hits:?}",
            e.path
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_input_routes_behave() -> anyhow::Result<()> {
    let origin = Origin::start().await?;

    let huge = get(&origin.url(HUGE_PATH)).await?;
    ensure!(huge.status == 200);
    ensure!(huge.content_length()? == HUGE_BYTES && huge.body.len() == HUGE_BYTES);
    ensure!(huge.body.starts_with(b"<!doctype html>"));

    let slow = get(&origin.url("/slow?ms=250")).await?;
    ensure!(slow.status == 200 && slow.content_length()? == slow.body.len());
    ensure!(
        slow.first_byte >= Duration::from_millis(250),
        "{:?}",
        slow.first_byte
    );
    ensure!(get(&origin.url("/slow")).await?.status == 400);

    // HEAD: the document's head, its Content-Length, and no body; other methods are refused
    let doc = origin.truth().requests[0].clone();
    let head = request("HEAD", &origin.url(&doc.path)).await?;
    ensure!(head.status == 200 && head.body.is_empty(), "{head:?}");
    ensure!(head.content_length()? == doc.body_bytes);
    let post = request("POST", &origin.url(&doc.path)).await?;
    ensure!(
        post.status == 405 && post.body == b"method not allowed\n",
        "{post:?}"
    );

    // /never: a complete head, a short body prefix, then silence with the connection open.
    let (mut stream, _) = send_get(&origin.url(NEVER_PATH)).await?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(head) = parse_head(&bytes)? {
            break head;
        }
        let n = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut chunk)).await??;
        ensure!(n > 0, "/never closed before its head");
        bytes.extend_from_slice(&chunk[..n]);
    };
    ensure!(head.status == 200);
    ensure!(head.headers.get("content-length") == Some(&NEVER_DECLARED_BYTES.to_string()));
    let quiet = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    ensure!(quiet.is_err(), "/never closed its connection");
    ensure!(bytes.len() - head.body_start < NEVER_DECLARED_BYTES);

    // Stopping the origin closes the held connection.
    drop(origin);
    let closed = tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    ensure!(
        closed.is_ok(),
        "/never still open after the origin was dropped"
    );
    Ok(())
}

/// A fresh, empty directory for one Chromium profile; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "vantage-origin-chromium-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `url` in headless Chromium with `--dump-dom`, which returns after the load event, and
/// returns the serialized DOM.
async fn chromium_dump_dom(url: &str) -> anyhow::Result<String> {
    let chrome = std::env::var("CHROME").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = TempDir::new()?;
    let mut child = tokio::process::Command::new(&chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a hung browser and all its helpers can be killed together.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {chrome} (set CHROME to override)"))?;
    let pgid = child.id().context("chromium has no pid")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let run = async {
        let (mut out, mut err) = (String::new(), String::new());
        let (o, e, status) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err),
            child.wait()
        );
        o?;
        e?;
        anyhow::Ok((status?, out, err))
    };
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(result) => {
            let (status, out, err) = result?;
            ensure!(status.success(), "chromium exited with {status}: {err}");
            Ok(out)
        }
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            bail!("chromium did not finish loading {url} within 60 s");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_makes_exactly_the_expected_requests() -> anyhow::Result<()> {
    let origin = Origin::start().await?;
    let truth = origin.truth().clone();
    let dom = chromium_dump_dom(&origin.url(&truth.document_path)).await?;
    // The load event waited for both scripts, so both have run.
    ensure!(
        dom.contains(r#"data-app="ran""#),
        "app.js did not run:\n{dom}"
    );
    ensure!(
        dom.contains(r#"data-widget="loaded""#),
        "the cross-origin script did not run:\n{dom}"
    );

    // Chromium has exited, but the servers may not have read its last requests yet.
    let want = |h: &vantage_tests::origin::Hit| {
        truth
            .requests
            .iter()
            .any(|e| e.origin == h.origin && e.path == h.target)
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while origin.hit_log().iter().filter(|h| want(h)).count() < truth.requests.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let hits = origin.hit_log();
    let mut problems = Vec::new();
    for e in &truth.requests {
        let matching: Vec<_> = hits
            .iter()
            .filter(|h| h.origin == e.origin && h.target == e.path)
            .collect();
        match matching.as_slice() {
            [h] if h.status == e.status => {}
            [h] => problems.push(format!("{}: status {} not {}", e.path, h.status, e.status)),
            m => problems.push(format!("{}: requested {} times", e.path, m.len())),
        }
    }
    for h in hits.iter().filter(|h| !want(h)) {
        problems.push(format!("unexpected request {h:?}"));
    }
    ensure!(problems.is_empty(), "{problems:#?}\nall hits: {hits:#?}");
    Ok(())
}
