//! Loads from acceptance to their last report: persisted before dispatch, placed, dispatched to
//! agents (a fan-out starts every region together), retried on the next candidate when an agent
//! dies mid-job, and resumed after a controller restart. Every state change is written to the
//! store before it is acted on.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddrV6;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch, Notify};
use vantage_fleet::tags::ports;
use vantage_mesh::Node;
use vantage_proto::api::{
    Attempt, AttemptOutcome, Failure, FailureKind, LoadEvent, LoadRequest, LoadState, LoadStatus,
    Placement, StoredReport,
};
use vantage_proto::wire::JobEvent;
use vantage_proto::JobSpec;

use super::dispatch::{self, Ended, Progress};
use super::fleet::FleetView;
use super::metrics::Metrics;
use super::placement::{self, FleetSnapshot, PlaceError, Plan};
use super::records::{new_id, target, target_mut, target_of};
use super::store::{Store, StoreError};
use super::unix_ms;

/// After start-up, how long placement waits for agents to be known before it falls back or
/// fails: a restarted controller has an empty view until gossip fills it.
const WARM_UP: Duration = Duration::from_secs(20);
/// How long a region's job may wait for a free agent slot.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(600);
/// A busy agent is asked again after this.
const BUSY_BACKOFF: Duration = Duration::from_millis(500);
/// Busy answers tolerated per region before the load fails.
const MAX_BUSY: u32 = 20;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_loads: usize,
    pub max_attempts: u32,
}

/// Why a load was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Place(#[from] PlaceError),
    #[error("{0} loads are queued or running, the most this controller takes; retry later")]
    TooMany(usize),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A load in flight: its event log (replayed to late subscribers) and the live feed.
struct Live {
    log: Vec<LoadEvent>,
    tx: broadcast::Sender<LoadEvent>,
    /// The load as last written; changes are made under `write` and persisted in order.
    status: LoadStatus,
    write: Arc<tokio::sync::Mutex<()>>,
}

/// The orchestrator; clones share it.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

struct Inner {
    store: Store,
    fleet: watch::Receiver<Arc<FleetView>>,
    node: Node,
    limits: Limits,
    metrics: Arc<Metrics>,
    started: Instant,
    live: Mutex<HashMap<String, Live>>,
    /// Jobs this controller has running on each agent.
    slots: Mutex<HashMap<String, usize>>,
    slot_freed: Notify,
    /// The tasks of loads in flight.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A validated load, ready to place.
#[derive(Debug, Clone)]
pub struct Validated {
    pub request: LoadRequest,
    pub job: JobSpec,
    pub from: Placement,
}

impl Orchestrator {
    pub fn new(
        store: Store,
        fleet: watch::Receiver<Arc<FleetView>>,
        node: Node,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                fleet,
                node,
                limits,
                metrics,
                started: Instant::now(),
                live: Mutex::default(),
                slots: Mutex::default(),
                slot_freed: Notify::new(),
                tasks: Mutex::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn fleet(&self) -> Arc<FleetView> {
        self.inner.fleet.borrow().clone()
    }

    /// Keeps a load's task so that [`Orchestrator::abort_all`] can stop it.
    fn track(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }

    /// Stops every load in flight where it is, closing its job streams (so the agents cancel
    /// the jobs at once). The store keeps them as in flight, for the next run to resume.
    pub fn abort_all(&self) {
        for t in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.live().len()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Accepts a load: places it (so a bad region is refused now), persists it, starts it.
    pub async fn submit(&self, v: Validated) -> Result<String, SubmitError> {
        let plans = match self.plan(&v.from, v.request.strict, &BTreeSet::new()) {
            Ok(p) => p,
            // right after a restart the view is still filling: accept and let the load wait
            // (regions are known from the store, so a typo is still refused at once)
            Err(e) if self.warming_up() && !matches!(e, PlaceError::UnknownRegion { .. }) => {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let id = new_id();
        let now = unix_ms();
        let status = LoadStatus {
            id: id.clone(),
            state: LoadState::Queued,
            created_unix_ms: now,
            finished_unix_ms: None,
            request: v.request.clone(),
            targets: plans
                .iter()
                .map(|p| target(&p.region, p.note.clone()))
                .collect(),
            failure: None,
            reports: Vec::new(),
        };
        {
            let mut live = self.live();
            if live.len() >= self.inner.limits.max_loads {
                return Err(SubmitError::TooMany(live.len()));
            }
            live.insert(id.clone(), new_live(status.clone()));
        }
        if let Err(e) = self.inner.store.put_load(&status).await {
            self.live().remove(&id);
            return Err(e.into());
        }
        self.inner.metrics.load_submitted();
        self.emit(&id, LoadEvent::Queued { id: id.clone() });
        let me = self.clone();
        let plans = (!plans.is_empty()).then_some(plans);
        self.track(tokio::spawn(async move { me.run_load(id, v, plans).await }));
        Ok(status.id)
    }

    /// Picks up loads a previous run left queued or running: attempts that were in flight are
    /// closed as interrupted, and what has attempts left is dispatched again.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let loads = self.inner.store.unfinished().await?;
        let n = loads.len();
        for mut status in loads {
            for t in &mut status.targets {
                for a in t.attempts.iter_mut().filter(|a| a.outcome.is_none()) {
                    a.outcome = Some(AttemptOutcome::ControllerRestart);
                    a.ended_unix_ms = Some(unix_ms());
                    a.detail = Some("the controller stopped during this attempt".into());
                }
            }
            let v = match validate_stored(&status.request) {
                Ok(v) => v,
                Err(e) => {
                    status.state = LoadState::Failed;
                    status.failure = Some(Failure {
                        kind: FailureKind::ControllerRestart,
                        message: format!("cannot resume after a restart: {e}"),
                    });
                    status.finished_unix_ms = Some(unix_ms());
                    self.inner.store.put_load(&status).await?;
                    continue;
                }
            };
            let settled =
                !status.targets.is_empty() && status.targets.iter().all(|t| t.state.is_terminal());
            tracing::info!(load = %status.id, "resuming a load left in flight by the last run");
            let id = status.id.clone();
            self.live().insert(id.clone(), new_live(status.clone()));
            self.inner.store.put_load(&status).await?;
            let me = self.clone();
            if settled {
                self.track(tokio::spawn(async move { me.finish(&id, None).await }));
            } else {
                self.track(tokio::spawn(async move { me.run_load(id, v, None).await }));
            }
        }
        Ok(n)
    }

    /// Past events and the live feed of a load in flight; `None` once it is over.
    pub fn subscribe(&self, id: &str) -> Option<(Vec<LoadEvent>, broadcast::Receiver<LoadEvent>)> {
        let live = self.live();
        let l = live.get(id)?;
        Some((l.log.clone(), l.tx.subscribe()))
    }

    fn warming_up(&self) -> bool {
        self.inner.started.elapsed() < WARM_UP
    }

    /// Placement over the current view, with this controller's own in-flight jobs counted.
    fn plan(
        &self,
        from: &Placement,
        strict: bool,
        exclude: &BTreeSet<String>,
    ) -> Result<Vec<Plan>, PlaceError> {
        placement::place(&self.snapshot(), from, strict, exclude)
    }

    fn snapshot(&self) -> FleetSnapshot {
        let mut snap = self.fleet().placement.clone();
        let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        for a in &mut snap.agents {
            a.active = a.active.max(slots.get(&a.name).copied().unwrap_or(0));
        }
        snap
    }

    fn emit(&self, id: &str, e: LoadEvent) {
        let mut live = self.live();
        if let Some(l) = live.get_mut(id) {
            l.log.push(e.clone());
            let _ = l.tx.send(e);
        }
    }

    /// The lock that puts a load's writes in order.
    fn writer(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.live().get(id).map(|l| l.write.clone())
    }

    /// A live load's status as last changed.
    fn status_of(&self, id: &str) -> Option<LoadStatus> {
        self.live().get(id).map(|l| l.status.clone())
    }

    /// Changes a load and writes it, in the order changes are made.
    async fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut LoadStatus),
    ) -> Result<LoadStatus, StoreError> {
        let Some(write) = self.writer(id) else {
            return Err(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows));
        };
        let _order = write.lock().await;
        let status = {
            let mut live = self.live();
            let l = live
                .get_mut(id)
                .expect("a live load stays until run_load ends");
            f(&mut l.status);
            l.status.clone()
        };
        self.inner.store.put_load(&status).await?;
        Ok(status)
    }

    async fn run_load(self, id: String, v: Validated, plans: Option<Vec<Plan>>) {
        let plans = match plans {
            Some(p) => p,
            None => match self.plan_when_ready(&v, &id).await {
                Ok(p) => p,
                Err(f) => {
                    self.finish(&id, Some(f)).await;
                    return;
                }
            },
        };
        let fanout = plans.len() > 1;
        let start_at = fanout.then(|| unix_ms() + self.fanout_lead(&plans).as_millis() as u64);
        let r = self
            .update(&id, |s| {
                s.state = LoadState::Running;
                for p in &plans {
                    if !s.targets.iter().any(|t| t.region == p.region) {
                        s.targets.push(target(&p.region, p.note.clone()));
                    }
                }
            })
            .await;
        if let Err(e) = r {
            tracing::error!(load = %id, error = %e, "cannot record the load as running");
        }
        // a JoinSet, so aborting the load (controller shutdown) aborts its regions too
        let mut tasks = tokio::task::JoinSet::new();
        for p in plans {
            let (me, id, v) = (self.clone(), id.clone(), v.clone());
            tasks.spawn(async move { me.run_target(&id, &v, p, start_at).await });
        }
        while tasks.join_next().await.is_some() {}
        self.finish(&id, None).await;
    }

    /// For loads accepted or resumed before the view filled: waits out the warm-up.
    async fn plan_when_ready(&self, v: &Validated, id: &str) -> Result<Vec<Plan>, Failure> {
        let known: Vec<String> = {
            let live = self.live();
            live.get(id)
                .map(|l| {
                    l.status
                        .targets
                        .iter()
                        .filter(|t| !t.state.is_terminal())
                        .map(|t| t.region.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        // a resumed load keeps the regions it was placed in
        let from = if known.is_empty() {
            v.from.clone()
        } else {
            Placement::Regions(known)
        };
        loop {
            match self.plan(&from, v.request.strict, &BTreeSet::new()) {
                Ok(p) if p.iter().all(|p| p.note.is_none()) || !self.warming_up() => return Ok(p),
                Err(e) if !self.warming_up() => {
                    return Err(Failure {
                        kind: FailureKind::NoAgent,
                        message: e.to_string(),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// How far ahead a fan-out's start is set: the job must reach the farthest agent first (a
    /// WireGuard handshake, a TCP handshake and the request: about three RTTs) and that agent
    /// may have to open a browser context. Without an estimate a pessimistic RTT is assumed, and
    /// the lead is never under 1.5 s: estimates right after start-up run low.
    fn fanout_lead(&self, plans: &[Plan]) -> Duration {
        const UNSETTLED_RTT: Duration = Duration::from_millis(600);
        let view = self.fleet();
        let worst = plans
            .iter()
            .filter_map(|p| p.agents.first())
            .map(|a| view.estimated_rtt(&view.me, a).unwrap_or(UNSETTLED_RTT))
            .max()
            .unwrap_or(UNSETTLED_RTT);
        (worst * 3 + Duration::from_millis(600))
            .clamp(Duration::from_millis(1500), Duration::from_secs(8))
    }

    /// Runs one region's job to a report or a failure, retrying on the next candidate.
    async fn run_target(&self, id: &str, v: &Validated, first: Plan, start_at: Option<u64>) {
        let region = first.region.clone();
        let mut plan = Some(first);
        let mut exclude = BTreeSet::new();
        let mut busy = 0u32;
        let mut lost_reasons: Vec<String> = Vec::new();
        let queued_since = Instant::now();
        let mut start_at = start_at;
        loop {
            let attempts = self.attempts_used(id, &region);
            if attempts >= self.inner.limits.max_attempts {
                let message = format!(
                    "gave up after {attempts} attempts: {}",
                    lost_reasons.join("; ")
                );
                return self
                    .fail_target(id, &region, FailureKind::AgentLost, message)
                    .await;
            }
            let p = match plan.take() {
                Some(p) => p,
                None => match self.plan(
                    &Placement::Regions(vec![region.clone()]),
                    v.request.strict,
                    &exclude,
                ) {
                    Ok(mut p) => p.remove(0),
                    Err(e) => {
                        let message = match lost_reasons.last() {
                            Some(why) => format!("{why}; {e}"),
                            None => e.to_string(),
                        };
                        return self
                            .fail_target(id, &region, FailureKind::NoAgent, message)
                            .await;
                    }
                },
            };
            let Some(agent) = self.free_agent(&p) else {
                if queued_since.elapsed() > QUEUE_TIMEOUT {
                    let message = format!(
                        "no agent slot came free within {} s",
                        QUEUE_TIMEOUT.as_secs()
                    );
                    return self
                        .fail_target(id, &region, FailureKind::NoAgent, message)
                        .await;
                }
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    self.inner.slot_freed.notified(),
                )
                .await;
                continue;
            };
            let note = p
                .note
                .clone()
                .filter(|_| agent != p.agents[0] || p.note.is_some());
            let ended = self
                .dispatch(id, &region, &agent, v, start_at.take(), note)
                .await;
            match ended {
                Ended::Report(report) => {
                    return self.complete_target(id, &region, &agent, *report).await;
                }
                Ended::Busy => {
                    busy += 1;
                    if busy > MAX_BUSY {
                        let message = format!("{agent} stayed busy through {MAX_BUSY} tries");
                        return self
                            .fail_target(id, &region, FailureKind::NoAgent, message)
                            .await;
                    }
                    tokio::time::sleep(BUSY_BACKOFF).await;
                }
                Ended::Rejected(why) if why.starts_with("no browser available") => {
                    lost_reasons.push(format!("{agent}: {why}"));
                    exclude.insert(agent.clone());
                    self.retried(id, &region, &agent, &why);
                }
                Ended::Rejected(why) => {
                    let message = format!("{agent} refused the job: {why}");
                    return self
                        .fail_target(id, &region, FailureKind::Rejected, message)
                        .await;
                }
                Ended::ConnectFailed(why) | Ended::Lost(why) => {
                    let why = format!("{agent} was lost: {why}");
                    lost_reasons.push(why.clone());
                    exclude.insert(agent.clone());
                    self.retried(id, &region, &agent, &why);
                }
            }
        }
    }

    fn retried(&self, id: &str, region: &str, agent: &str, why: &str) {
        self.inner.metrics.retried();
        self.emit(
            id,
            LoadEvent::Retried {
                region: region.into(),
                failed_agent: agent.into(),
                reason: why.into(),
            },
        );
    }

    /// Attempts that count against the limit (busy answers do not).
    fn attempts_used(&self, id: &str, region: &str) -> u32 {
        let live = self.live();
        live.get(id)
            .and_then(|l| l.status.targets.iter().find(|t| t.region == region))
            .map_or(0, |t| {
                t.attempts
                    .iter()
                    .filter(|a| a.outcome != Some(AttemptOutcome::Busy))
                    .count() as u32
            })
    }

    /// The first agent of the plan's first region with a slot this controller has not filled.
    /// Later regions in the plan are fallbacks: a busy region waits rather than moving. Only
    /// this controller's own count is used: an agent's `jobs` tag lags by a gossip round.
    fn free_agent(&self, p: &Plan) -> Option<String> {
        let mut snap = self.fleet().placement.clone();
        {
            let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            for a in &mut snap.agents {
                a.active = slots.get(&a.name).copied().unwrap_or(0);
            }
        }
        let first_region = snap
            .agents
            .iter()
            .find(|a| Some(&a.name) == p.agents.first())
            .map(|a| a.region.clone())?;
        p.agents
            .iter()
            .filter_map(|n| snap.agents.iter().find(|a| &a.name == n))
            .filter(|a| a.region == first_region)
            .find(|a| a.active < a.capacity.max(1))
            .map(|a| a.name.clone())
    }

    /// One attempt on `agent`, recorded before and after.
    async fn dispatch(
        &self,
        id: &str,
        region: &str,
        agent: &str,
        v: &Validated,
        start_at: Option<u64>,
        note: Option<String>,
    ) -> Ended {
        let view = self.fleet();
        let Some(member) = view.member(agent) else {
            return Ended::ConnectFailed(format!("{agent} is no longer a member"));
        };
        let std::net::SocketAddr::V6(gossip) = member.addr else {
            return Ended::ConnectFailed(format!("{agent} has no overlay address"));
        };
        let addr = SocketAddrV6::new(*gossip.ip(), ports::JOBS, 0, 0);
        let agent_region = member
            .tags
            .get(vantage_fleet::tags::REGION)
            .cloned()
            .unwrap_or_default();
        let rtt = view.estimated_rtt(&view.me, agent);
        let _slot = Slot::take(self, agent);
        let number = {
            let recorded = self
                .update(id, |s| {
                    let t = target_mut(s, region);
                    let number = t.attempts.len() as u32 + 1;
                    t.attempts.push(Attempt {
                        number,
                        agent: agent.into(),
                        region: agent_region.clone(),
                        dispatched_unix_ms: unix_ms(),
                        ended_unix_ms: None,
                        outcome: None,
                        detail: None,
                    });
                    if note.is_some() {
                        t.note = note.clone();
                    }
                })
                .await;
            match recorded {
                Ok(s) => target_of(&s, region).map_or(1, |t| t.attempts.len() as u32),
                Err(e) => return Ended::ConnectFailed(format!("cannot record the attempt: {e}")),
            }
        };
        self.emit(
            id,
            LoadEvent::Dispatched {
                region: region.into(),
                agent: agent.into(),
                attempt: number,
            },
        );
        let connect_timeout =
            Duration::from_secs(3) + rtt.unwrap_or(Duration::from_millis(500)) * 2;
        let began = Instant::now();
        let metrics = self.inner.metrics.clone();
        let ended = dispatch::attempt(
            &self.inner.node,
            addr,
            &v.job,
            start_at,
            connect_timeout,
            |p| match p {
                Progress::Admitted => metrics.dispatched(began.elapsed()),
                Progress::Event(e) => self.forward(id, region, agent, e),
            },
        )
        .await;
        let (outcome, detail) = match &ended {
            Ended::Report(_) => (AttemptOutcome::Report, None),
            Ended::ConnectFailed(w) => (AttemptOutcome::ConnectFailed, Some(w.clone())),
            Ended::Lost(w) => (AttemptOutcome::AgentLost, Some(w.clone())),
            Ended::Busy => (
                AttemptOutcome::Busy,
                Some(format!("{agent} had no free slot")),
            ),
            Ended::Rejected(w) => (AttemptOutcome::Rejected, Some(w.clone())),
        };
        self.inner.metrics.attempt(outcome);
        let r = self
            .update(id, |s| {
                if let Some(a) = target_mut(s, region)
                    .attempts
                    .iter_mut()
                    .find(|a| a.number == number)
                {
                    a.outcome = Some(outcome);
                    a.detail = detail;
                    a.ended_unix_ms = Some(unix_ms());
                }
            })
            .await;
        if let Err(e) = r {
            tracing::error!(load = %id, error = %e, "cannot record the end of an attempt");
        }
        ended
    }

    fn forward(&self, id: &str, region: &str, agent: &str, e: JobEvent) {
        let ev = match e {
            JobEvent::RunStarted { index, view } => LoadEvent::RunStarted {
                region: region.into(),
                agent: agent.into(),
                index,
                view,
            },
            JobEvent::RunFinished {
                index,
                view,
                load_ms,
            } => LoadEvent::RunFinished {
                region: region.into(),
                agent: agent.into(),
                index,
                view,
                load_ms,
            },
            _ => return,
        };
        self.emit(id, ev);
    }

    async fn complete_target(
        &self,
        id: &str,
        region: &str,
        agent: &str,
        report: vantage_proto::Report,
    ) {
        let view = self.fleet();
        let estimated_rtt_ms = view
            .estimated_rtt(&view.me, agent)
            .map(|d| d.as_secs_f64() * 1e3);
        // the report and the target's new state go in one transaction, in the load's order
        let Some(write) = self.writer(id) else { return };
        let order = write.lock().await;
        let Some(status) = self.status_of(id) else {
            return;
        };
        let t = target_of(&status, region).cloned();
        let stored = StoredReport {
            id: 0,
            load_id: id.into(),
            region: region.into(),
            agent: agent.into(),
            agent_region: report.region.clone(),
            attempts: t.as_ref().map(|t| t.attempts.clone()).unwrap_or_default(),
            note: t.and_then(|t| t.note),
            estimated_rtt_ms,
            report,
        };
        match self.inner.store.put_report(&status, stored).await {
            Ok(report_id) => {
                {
                    let mut live = self.live();
                    if let Some(l) = live.get_mut(id) {
                        let t = target_mut(&mut l.status, region);
                        t.report_id = Some(report_id);
                        t.state = LoadState::Done;
                    }
                }
                self.emit(
                    id,
                    LoadEvent::TargetDone {
                        region: region.into(),
                        report_id,
                    },
                );
            }
            Err(e) => {
                tracing::error!(load = %id, error = %e, "cannot store a report");
                drop(order);
                self.fail_target(
                    id,
                    region,
                    FailureKind::Internal,
                    format!("cannot store the report: {e}"),
                )
                .await;
            }
        }
    }

    async fn fail_target(&self, id: &str, region: &str, kind: FailureKind, message: String) {
        let failure = Failure { kind, message };
        let f = failure.clone();
        let r = self
            .update(id, |s| {
                let t = target_mut(s, region);
                t.state = LoadState::Failed;
                t.failure = Some(f);
            })
            .await;
        if let Err(e) = r {
            tracing::error!(load = %id, error = %e, "cannot record a failed region");
        }
        self.emit(
            id,
            LoadEvent::TargetFailed {
                region: region.into(),
                failure,
            },
        );
    }

    /// Ends a load: done if any region has a report, failed otherwise; then forgets it.
    async fn finish(&self, id: &str, failure: Option<Failure>) {
        let r = self
            .update(id, |s| {
                let any_done = s.targets.iter().any(|t| t.state == LoadState::Done);
                s.failure = failure.or_else(|| {
                    (!any_done).then(|| {
                        s.targets
                            .iter()
                            .find_map(|t| t.failure.clone())
                            .unwrap_or(Failure {
                                kind: FailureKind::NoAgent,
                                message: "no region was placed".into(),
                            })
                    })
                });
                s.state = if any_done && s.failure.is_none() {
                    LoadState::Done
                } else {
                    LoadState::Failed
                };
                s.finished_unix_ms = Some(unix_ms());
            })
            .await;
        let (state, failure) = match r {
            Ok(s) => (s.state, s.failure),
            Err(e) => {
                tracing::error!(load = %id, error = %e, "cannot record the end of a load");
                (LoadState::Failed, None)
            }
        };
        self.inner.metrics.load_finished(state);
        self.emit(id, LoadEvent::Done { state, failure });
        self.live().remove(id);
    }
}

/// This controller's count of jobs on one agent, held for an attempt.
struct Slot<'a> {
    o: &'a Orchestrator,
    agent: String,
}

impl<'a> Slot<'a> {
    fn take(o: &'a Orchestrator, agent: &str) -> Self {
        *o.inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(agent.into())
            .or_default() += 1;
        Self {
            o,
            agent: agent.into(),
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut slots = self.o.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = slots.get_mut(&self.agent) {
            *n = n.saturating_sub(1);
        }
        drop(slots);
        self.o.inner.slot_freed.notify_waiters();
    }
}

fn new_live(status: LoadStatus) -> Live {
    Live {
        log: Vec::new(),
        tx: broadcast::channel(256).0,
        status,
        write: Arc::default(),
    }
}

/// Turns a stored request back into a job (it was valid when accepted).
fn validate_stored(r: &LoadRequest) -> Result<Validated, String> {
    super::validate::job_of(r).map_err(|e| e.to_string())
}
