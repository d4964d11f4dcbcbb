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
