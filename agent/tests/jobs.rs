//! The job API: capacity 2 and a queue of 2; six jobs at once: two run, two wait, two are told
//! the agent is busy, and every accepted job ends with a report. No job is lost.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vantage_agent::chromium::{BrowserState, ChromiumConfig, Supervisor};
use vantage_agent::jobs::submit;
use vantage_proto::wire::JobEvent;
use vantage_proto::{JobSpec, Wait};
use vantage_tests::origin::{Origin, SLOW_PATH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_two_queue_two_six_jobs() {
    let origin = Origin::start().await.unwrap();
    let sup = common::ready(common::chromium()).await;
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let server = common::job_server(
        &sup,
        2,
        2,
        Box::new(move || {
            d.fetch_add(1, Ordering::SeqCst);
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move { s.serve(stream).await });
        }
    });
    // each job holds its slot for about a second
    let mut spec = JobSpec::new(&origin.url(&format!("{SLOW_PATH}?ms=1000")));
    spec.wait = Wait::Load;
    spec.timeout_ms = 20_000;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            submit(stream, &spec).await.unwrap()
        }));
    }
    let mut reports = 0;
    let mut busy = 0;
    for t in tasks {
        let events = t.await.unwrap();
        match events.last().unwrap() {
            JobEvent::Report { report } => {
                assert_eq!(report.runs[0].error, None, "{:?}", report.runs[0]);
                assert!(matches!(events[0], JobEvent::Queued { .. }), "{events:?}");
                assert!(events
                    .iter()
                    .any(|e| matches!(e, JobEvent::RunStarted { .. })));
                reports += 1;
            }
            JobEvent::Busy { running, queued } => {
                assert_eq!((*running, *queued), (2, 2));
                busy += 1;
            }
            other => panic!("unexpected end of a job stream: {other:?}"),
        }
    }
    println!("{reports} reports, {busy} busy");
    assert_eq!(
        (reports, busy),
        (4, 2),
        "2 run + 2 queued get reports; the other 2 are busy"
    );
    assert_eq!(
        done.load(Ordering::SeqCst),
        4,
        "every accepted job finished"
    );
    // the server releases a slot after writing the report, so a client can read the report a
    // moment before that: wait for it, but not forever
    for _ in 0..100 {
        if server.active() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.active(), 0, "a finished job kept its slot");
    // a bad spec is rejected with the reason
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let events = submit(stream, &JobSpec::new("file:///etc/passwd"))
        .await
        .unwrap();
    assert!(
        matches!(&events[0], JobEvent::Rejected { error } if error.contains("only http and https")),
        "{events:?}"
    );
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_its_job_and_leaks_no_tab() {
    let origin = Origin::start().await.unwrap();
    let sup = Supervisor::spawn(ChromiumConfig {
        ..common::chromium()
    });
    let port = sup.ready(Duration::from_secs(60)).await.unwrap();
    let server = common::job_server(&sup, 1, 0, Box::new(|| {}));
    let (client, agent_side) = tokio::io::duplex(1 << 20);
    let s = server.clone();
    let serving = tokio::spawn(async move { s.serve(agent_side).await });
    let mut spec = JobSpec::new(&origin.url(&format!("{SLOW_PATH}?ms=20000")));
    spec.timeout_ms = 60_000;
    let submitting = tokio::spawn(async move { submit(client, &spec).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    submitting.abort(); // the client goes away mid-run
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the job was not cancelled")
        .unwrap()
        .unwrap();
    assert_eq!(server.active(), 0);
    // only the initial about:blank page remains once the disposal has gone through
    let (pages, list) = settled_pages(port, 1).await;
    assert_eq!(pages, 1, "a cancelled job left pages behind: {list}");
    sup.stop().await;
}

/// The number of open pages once it is `want` (or after 10 s, whatever it is then), and the list.
async fn settled_pages(port: u16, want: usize) -> (usize, String) {
    let mut list = String::new();
    for _ in 0..100 {
        list = vantage_agent::chromium::http_get(port, "/json/list")
            .await
            .unwrap();
        if list.matches("\"type\": \"page\"").count() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (list.matches("\"type\": \"page\"").count(), list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_on_the_context_opened_ahead_and_only_one_is_ever_kept() {
    let origin = Origin::start().await.unwrap();
    let sup = Supervisor::spawn(ChromiumConfig {
        ..common::chromium()
    });
    let port = sup.ready(Duration::from_secs(60)).await.unwrap();
    let server = common::job_server(&sup, 1, 0, Box::new(|| {}));
    server.keep_warm();
    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.wait = Wait::Load;
    for i in 0..4 {
        tokio::time::timeout(Duration::from_secs(30), async {
            while !server.has_spare() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no context was opened ahead of job {i}"));
        let events = common::run_job(&server, &spec).await;
        let Some(JobEvent::Report { report }) = events.last() else {
            panic!("job {i} ended with {:?}", events.last())
        };
        let run = &report.runs[0];
        assert_eq!(run.error, None, "job {i}");
        assert!(run.requests.len() > 5, "job {i}: {:?}", run.requests);
    }
    // every job ran on the context opened ahead of it, never on one a job had used (the pool only
    // ever holds fresh openings)
    assert_eq!(server.spares_taken(), 4);
    // the initial page plus exactly one spare: used contexts are all disposed
    let (pages, list) = settled_pages(port, 2).await;
    assert_eq!(pages, 2, "{list}");
    sup.stop().await;
}

#[allow(unsafe_code)]
fn sigkill(pid: u32) {
    // SAFETY: kill(2) on the browser pid the supervisor reported; no memory involved.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_chromium_crash_the_next_job_succeeds() {
    let origin = Origin::start().await.unwrap();
    let sup = common::ready(ChromiumConfig {
        health_interval: Duration::from_millis(200),
        ..common::chromium()
    })
    .await;
    let server = common::job_server(&sup, 1, 1, Box::new(|| {}));
    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.wait = Wait::Load;
    let run = |spec: JobSpec| {
        let s = server.clone();
        async move { common::run_job(&s, &spec).await }
    };
    assert!(matches!(
        run(spec.clone()).await.last(),
        Some(JobEvent::Report { .. })
    ));
    let BrowserState::Ready { pid, .. } = sup.state() else {
        panic!()
    };
    let mut states = sup.watch();
    sigkill(pid);
    tokio::time::timeout(
        Duration::from_secs(10),
        states.wait_for(|s| s.tag() == "restarting"),
    )
    .await
    .unwrap()
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        states.wait_for(|s| s.tag() == "ready"),
    )
    .await
    .unwrap()
    .unwrap();
    let events = run(spec).await;
    match events.last() {
        Some(JobEvent::Report { report }) => {
            assert_eq!(report.runs[0].error, None, "{:?}", report.runs[0])
        }
        other => panic!("the job after a crash did not succeed: {other:?}"),
    }
    sup.stop().await;
}

/// All processes in the browser's group plus any zombie children of this process.
fn browser_processes(sup: &Supervisor) -> usize {
    match sup.state() {
        BrowserState::Ready { pid, .. } => vantage_agent::chromium::group_members(pid as i32).len(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_jobs_with_recycling_every_twenty_all_complete() {
    let origin = Origin::start().await.unwrap();
    let sup = common::ready(ChromiumConfig {
        recycle_after_jobs: 20,
        ..common::chromium()
    })
    .await;
    let s2 = sup.clone();
    let server = common::job_server(&sup, 1, 1, Box::new(move || s2.job_done()));
    let mut spec = JobSpec::new(&origin.url(&format!("{SLOW_PATH}?ms=0")));
    spec.wait = Wait::Load;
    let mut pids = std::collections::BTreeSet::new();
    let mut counts = Vec::new();
    for i in 0..100 {
        let events = common::run_job(&server, &spec).await;
        match events.last() {
            Some(JobEvent::Report { report }) => {
                assert_eq!(report.runs[0].error, None, "job {i}: {:?}", report.runs[0]);
            }
            other => panic!("job {i} did not complete: {other:?}"),
        }
        if let BrowserState::Ready { pid, .. } = sup.state() {
            pids.insert(pid);
        }
        if i % 20 == 10 {
            counts.push(browser_processes(&sup));
        }
    }
    println!(
        "100 jobs on {} browsers; browser process counts mid-cycle: {counts:?}",
        pids.len()
    );
    assert!(
        pids.len() >= 5,
        "expected a recycle every 20 jobs, saw {} browsers",
        pids.len()
    );
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 3, "the process count grew: {counts:?}");
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_turned_away_and_real_jobs_still_run() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await.unwrap();
    let sup = common::ready(common::chromium()).await;
    let server = common::job_server(&sup, 1, 1, Box::new(|| {}));
    let serve = |bytes: Vec<u8>| {
        let server = server.clone();
        async move {
            let (mut client, agent_side) = tokio::io::duplex(1 << 16);
            let s = server.clone();
            let serving = tokio::spawn(async move { s.serve(agent_side).await });
            client.write_all(&bytes).await.unwrap();
            let result = tokio::time::timeout(Duration::from_secs(30), serving)
                .await
                .expect("the server held a hostile connection")
                .unwrap();
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            (result, String::from_utf8_lossy(&answer).into_owned())
        }
    };
    // says nothing at all: dropped after the request timeout
    let silent = serve(Vec::new());
    // announces a frame far larger than any job request
    let huge = serve((1u32 << 24).to_be_bytes().to_vec());
    // a frame that is not a job request
    let mut garbage = 9u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"not json!");
    let garbage = serve(garbage);
    let ((silent, _), (huge, _), (garbage, answer)) = tokio::join!(silent, huge, garbage);
    let e = format!("{:#}", silent.unwrap_err());
    assert!(e.contains("no job request within"), "{e}");
    let e = format!("{:#}", huge.unwrap_err());
    assert!(e.contains("16777216 bytes") && e.contains("limit"), "{e}");
    garbage.unwrap();
    assert!(answer.contains("rejected"), "{answer}");
    assert_eq!(server.active(), 0);
    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.wait = Wait::Load;
    let events = common::run_job(&server, &spec).await;
    assert!(
        matches!(events.last(), Some(JobEvent::Report { .. })),
        "{:?}",
        events.last()
    );
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycle_waits_for_the_job_still_loading() {
    let origin = Origin::start().await.unwrap();
    let sup = common::ready(ChromiumConfig {
        recycle_after_jobs: 1,
        ..common::chromium()
    })
    .await;
    let s2 = sup.clone();
    let server = common::job_server(&sup, 2, 0, Box::new(move || s2.job_done()));
    let mut slow = JobSpec::new(&origin.url(&format!("{SLOW_PATH}?ms=3000")));
    slow.wait = Wait::Load;
    let mut quick = JobSpec::new(&origin.url("/index.html"));
    quick.wait = Wait::Load;
    let s = server.clone();
    let slow_job = tokio::spawn(async move { common::run_job(&s, &slow).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // finishes first and so asks for the recycle while the slow job is mid-load
    let events = common::run_job(&server, &quick).await;
    assert!(
        matches!(events.last(), Some(JobEvent::Report { .. })),
        "{:?}",
        events.last()
    );
    let events = slow_job.await.unwrap();
    match events.last() {
        Some(JobEvent::Report { report }) => {
            assert_eq!(report.runs[0].error, None, "{:?}", report.runs[0]);
            assert!(report.runs[0].timing.load_ms.unwrap_or(0.0) >= 3000.0);
        }
        other => panic!("the slow job did not complete: {other:?}"),
    }
    sup.stop().await;
}

/// Every frame of one job over an in-memory stream, with when it arrived.
async fn frames(
    server: &Arc<vantage_agent::jobs::JobServer>,
    req: &vantage_proto::wire::JobRequest,
) -> Vec<(std::time::Instant, JobEvent)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vantage_proto::wire;
    let (mut client, agent_side) = tokio::io::duplex(1 << 20);
    let s = server.clone();
    let serving = tokio::spawn(async move { s.serve(agent_side).await });
    client.write_all(&wire::encode(req)).await.unwrap();
    let mut got = Vec::new();
    loop {
        let len = client.read_u32().await.unwrap();
        let mut body = vec![0u8; wire::check_len(len).unwrap()];
        client.read_exact(&mut body).await.unwrap();
        let e: JobEvent = wire::decode(&body).unwrap();
        let last = matches!(
            e,
            JobEvent::Report { .. } | JobEvent::Busy { .. } | JobEvent::Rejected { .. }
        );
        got.push((std::time::Instant::now(), e));
        if last {
            break;
        }
    }
    serving.await.unwrap().unwrap();
    got
}

/// The longest silence between two frames, and how many heartbeats came.
fn longest_gap(frames: &[(std::time::Instant, JobEvent)]) -> (Duration, usize) {
    let gap = frames
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    let beats = frames
        .iter()
        .filter(|(_, e)| matches!(e, JobEvent::Heartbeat))
        .count();
    (gap, beats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_the_stream_alive_while_queued_and_running() {
    use vantage_proto::wire::{JobRequest, HEARTBEAT_INTERVAL_MS, SILENCE_LIMIT_MS};
    let origin = Origin::start().await.unwrap();
    let sup = common::ready(common::chromium()).await;
    let server = common::job_server(&sup, 1, 1, Box::new(|| {}));
    // a page that takes 2.5 s, with a screenshot so the report frame takes some preparing; the
    // second job waits for the first one's slot all that time
    let mut spec = JobSpec::new(&origin.url(&format!("{SLOW_PATH}?ms=2500")));
    spec.wait = Wait::Load;
    spec.screenshot = true;
    spec.timeout_ms = 20_000;
    let req = JobRequest::new(spec);
    let first = frames(&server, &req);
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        frames(&server, &req).await
    };
    let (first, second) = tokio::join!(first, second);
    for (which, f) in [("running", &first), ("queued, then running", &second)] {
        assert!(
            matches!(f[0].1, JobEvent::Queued { .. }),
            "{which}: {:?}",
            f[0].1
        );
        let Some((_, JobEvent::Report { report })) = f.last() else {
            panic!("{which}: ended with {:?}", f.last().map(|e| &e.1))
        };
        assert_eq!(report.runs[0].error, None, "{which}");
        let (gap, beats) = longest_gap(f);
        let lasted = f.last().unwrap().0 - f[0].0;
        println!("{which}: {beats} heartbeats over {lasted:?}, longest silence {gap:?}");
        // the agent promises one every HEARTBEAT_INTERVAL_MS; a client gives up after
        // SILENCE_LIMIT_MS. A second leaves room for a busy test machine and stays well inside.
        const { assert!(HEARTBEAT_INTERVAL_MS < 1000 && 1000 < SILENCE_LIMIT_MS) };
        assert!(
            gap <= Duration::from_secs(1),
            "{which}: {gap:?} without a frame"
        );
        assert!(
            lasted > Duration::from_secs(2),
            "{which}: lasted {lasted:?}"
        );
        assert!(beats >= 3, "{which}: {beats} heartbeats over {lasted:?}");
    }
    // the queued job really waited for the first one's slot, heartbeating meanwhile
    let first_done = first.last().unwrap().0;
    let queued_beats = second
        .iter()
        .take_while(|(_, e)| !matches!(e, JobEvent::RunStarted { .. }))
        .filter(|(t, e)| matches!(e, JobEvent::Heartbeat) && *t < first_done)
        .count();
    assert!(queued_beats >= 3, "{queued_beats} heartbeats while queued");
    // the client API hides them
    let events = common::run_job(&server, &req.job).await;
    assert!(
        !events.iter().any(|e| matches!(e, JobEvent::Heartbeat)),
        "{events:?}"
    );
    sup.stop().await;
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_starts_at_its_start_time_and_one_too_far_ahead_is_refused() {
    use vantage_proto::wire::JobRequest;
    let origin = Origin::start().await.unwrap();
    let sup = common::ready(common::chromium()).await;
    let server = common::job_server(&sup, 1, 0, Box::new(|| {}));
    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.wait = Wait::Load;
    let at = unix_ms() + 1500;
    let req = JobRequest {
        start_at_unix_ms: Some(at),
        ..JobRequest::new(spec.clone())
    };
    let f = frames(&server, &req).await;
    let Some((_, JobEvent::Report { report })) = f.last() else {
        panic!("ended with {:?}", f.last().map(|e| &e.1))
    };
    let run = &report.runs[0];
    assert_eq!(run.error, None);
    println!(
        "asked for {at}; the job started at {} (+{} ms), its first run at {} (+{} ms)",
        report.started_unix_ms,
        report.started_unix_ms as i64 - at as i64,
        run.started_unix_ms,
        run.started_unix_ms as i64 - at as i64
    );
    // agents told the same time must start within 50 ms of each other: each within 50 ms of it
    for (what, t) in [
        ("report", report.started_unix_ms),
        ("first run", run.started_unix_ms),
    ] {
        assert!(t >= at, "{what} started {} ms early", at - t);
        assert!(t <= at + 50, "{what} started {} ms late", t - at);
    }
    // and the wait was heartbeated like the rest
    let (gap, _) = longest_gap(&f);
    assert!(gap <= Duration::from_secs(1), "{gap:?} without a frame");

    // a start 20 s ahead is a mistake, not a plan
    let stream = {
        let (client, agent_side) = tokio::io::duplex(1 << 16);
        let s = server.clone();
        tokio::spawn(async move { s.serve(agent_side).await });
        client
    };
    let events = vantage_agent::jobs::submit_at(stream, &spec, unix_ms() + 20_000)
        .await
        .unwrap();
    assert!(
        matches!(&events[..], [JobEvent::Rejected { error }]
            if error.contains("start_at_unix_ms") && error.contains("at most 10000 ms ahead")),
        "{:?}",
        events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap()["event"].to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(server.active(), 0);
    sup.stop().await;
}
