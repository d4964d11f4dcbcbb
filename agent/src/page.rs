//! Browser contexts for runs: a fresh context with one attached page per cold run, and a pool
//! that opens the next one ahead of need. Opening costs Chromium a renderer process and the
//! domain enables wait for it (about 350 ms here), which would otherwise sit on every job's
//! critical path. With the egress guard on, each context goes through its own [`Lane`], opened
//! with it and closed with it, so the guard's outcomes of a run are exactly its context's.

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use serde_json::json;
use tokio::task::JoinHandle;
use vantage_proto::JobSpec;

use crate::capture::OBSERVER_JS;
use crate::cdp::{Cdp, Events};
use crate::egress::{self, Guard, Lane, Outcome};

/// A browser context with one page attached. Dropped without [`PageCtx::close`] (a cancelled
/// job, a spare nobody took), it still disposes of the context, so nothing leaks a tab.
pub(crate) struct PageCtx {
    cdp: Cdp,
    context: String,
    pub(crate) session: String,
    pub(crate) events: Events,
    /// Loaders of the navigations run on this page so far: their late events are not the next
    /// run's.
    pub(crate) stale: HashSet<String>,
    /// The context's own port on the egress guard, if the guard is on.
    lane: Option<Lane>,
    closed: bool,
}

impl Drop for PageCtx {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let (cdp, context, session) =
            (self.cdp.clone(), self.context.clone(), self.session.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                cdp.unsubscribe(&session);
                let _ = cdp
                    .call(
                        None,
                        "Target.disposeBrowserContext",
                        json!({ "browserContextId": context }),
                    )
                    .await;
            });
        }
    }
}

impl PageCtx {
    /// A new context and page with everything a run captures switched on, but nothing of any
    /// job's own settings: those come with [`PageCtx::configure`]. With a `guard`, the context
    /// gets a lane of its own as its proxy (this is the agent's own CDP connection, which the
    /// gateway's refusal of `proxyServer` does not apply to).
    async fn open(cdp: &Cdp, guard: Option<&Guard>) -> Result<Self> {
        let lane = match guard {
            Some(g) => Some(
                g.lane()
                    .await
                    .map_err(|e| anyhow!("cannot open a lane on the egress guard: {e}"))?,
            ),
            None => None,
        };
        let mut params = json!({ "disposeOnDetach": true });
        if let Some(l) = &lane {
            params["proxyServer"] = json!(l.proxy_server());
            params["proxyBypassList"] = json!(egress::PROXY_BYPASS);
        }
        let context = cdp
            .call(None, "Target.createBrowserContext", params)
            .await?;
        let context = context["browserContextId"]
            .as_str()
            .ok_or_else(|| anyhow!("no browserContextId"))?
            .to_owned();
        // from here on, any early return disposes of the context through Drop
        let mut ctx = Self {
            cdp: cdp.clone(),
            context: context.clone(),
            session: String::new(),
            events: Events::none(),
            stale: HashSet::new(),
            lane,
            closed: false,
        };
        let target = cdp
            .call(
                None,
                "Target.createTarget",
                json!({ "url": "about:blank", "browserContextId": context }),
            )
            .await?;
        let target = target["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("no targetId"))?
            .to_owned();
        let attached = cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId"))?
            .to_owned();
        ctx.events = cdp.subscribe(&session);
        ctx.session = session.clone();
        let s = Some(session.as_str());
        // Inspector reports a crashed renderer; lifecycle events name the loader whose load fired
        for domain in [
            "Page.enable",
            "Network.enable",
            "Runtime.enable",
            "Log.enable",
            "Performance.enable",
            "Inspector.enable",
        ] {
            cdp.call(s, domain, json!({})).await?;
        }
        cdp.call(
            s,
            "Page.setLifecycleEventsEnabled",
            json!({ "enabled": true }),
        )
        .await?;
        // certificate errors are never ignored: no Security.setIgnoreCertificateErrors here
        cdp.call(
            s,
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": OBSERVER_JS }),
        )
        .await?;
        Ok(ctx)
    }

    /// Applies the job's viewport and user agent.
    pub(crate) async fn configure(&self, spec: &JobSpec) -> Result<()> {
        let s = Some(self.session.as_str());
        let vp = spec.viewport;
        self.cdp
            .call(
                s,
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": vp.width, "height": vp.height, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await?;
        if let Some(ua) = &spec.user_agent {
            self.cdp
                .call(
                    s,
                    "Network.setUserAgentOverride",
                    json!({ "userAgent": ua }),
                )
                .await?;
        }
        Ok(())
    }

    /// Takes the events queued before a navigation: they are the previous run's, whose loaders
    /// are noted stale so their stragglers are told apart too.
    pub(crate) fn drain_stale(&mut self) {
        while let Some(e) = self.events.try_recv() {
            if let Some(l) = e
                .params
                .get("loaderId")
                .and_then(|l| l.as_str())
                .filter(|l| !l.is_empty())
            {
                self.stale.insert(l.to_owned());
            }
        }
    }

    /// The guard's outcomes of the connections this context asked for, oldest first; `None`
    /// without the guard.
    pub(crate) fn outcomes(&self) -> Option<Vec<Outcome>> {
        self.lane.as_ref().map(Lane::outcomes)
    }

    pub(crate) async fn close(mut self) {
        self.closed = true;
        self.cdp.unsubscribe(&self.session);
        let _ = self
            .cdp
            .call(
                None,
                "Target.disposeBrowserContext",
                json!({ "browserContextId": self.context }),
            )
            .await;
    }
}

/// An opening in progress. Spawned, so that a job cancelled while waiting for it does not leak
/// the context: the open completes and its result, dropped, disposes of it.
pub(crate) type Opening = JoinHandle<Result<PageCtx>>;

/// Starts opening a context on `cdp`, through a lane of `guard` if there is one.
pub(crate) fn open(cdp: &Cdp, guard: Option<&Guard>) -> Opening {
    let (cdp, guard) = (cdp.clone(), guard.cloned());
    tokio::spawn(async move { PageCtx::open(&cdp, guard.as_ref()).await })
}

/// A context opened ahead: on which connection, through which guard (by its port).
struct Spare {
    cdp: Cdp,
    guard: Option<u16>,
    opening: Opening,
}

impl Spare {
    fn fits(&self, cdp: &Cdp, guard: Option<&Guard>) -> bool {
        self.cdp.same_connection(cdp) && self.guard == guard.map(Guard::port)
    }
}

/// At most one context opened ahead, for the next cold run on this agent. An unused context has
/// an empty cache and no cookies, so taking it is the same as opening one: only sooner.
#[derive(Default)]
pub struct PagePool {
    spare: Mutex<Option<Spare>>,
    taken: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PagePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagePool")
            .field("spare", &self.has_spare())
            .finish()
    }
}

impl PagePool {
    /// Starts opening a spare on `cdp` (through a lane of `guard`) unless one is there (or on
    /// its way) for that connection and guard.
    pub fn refill(&self, cdp: &Cdp, guard: Option<&Guard>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.as_ref().is_some_and(|s| s.fits(cdp, guard)) {
            return;
        }
        // a spare on an older connection is dropped; its context went with that browser
        *spare = Some(Spare {
            cdp: cdp.clone(),
            guard: guard.map(Guard::port),
            opening: open(cdp, guard),
        });
    }

    /// The spare, if one was opened on `cdp` through `guard`; otherwise a fresh opening.
    pub(crate) fn take(&self, cdp: &Cdp, guard: Option<&Guard>) -> Opening {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        match spare {
            Some(s) if s.fits(cdp, guard) => {
                self.taken
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                s.opening
            }
            _ => open(cdp, guard),
        }
    }

    /// How many cold runs have started on a spare.
    pub fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a spare is held (open or opening).
    pub fn has_spare(&self) -> bool {
        self.spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}
