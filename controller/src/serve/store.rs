//! The controller's durable state: loads (with their targets and attempts) and reports, in one
//! SQLite database (WAL, versioned migrations). Every state change of a load is written before
//! it is acted on, so a restart finds every load where it was.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use vantage_proto::api::{LoadState, LoadStatus, ReportSummary, StoredReport};

/// Schema migrations, in order; `PRAGMA user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: loads and reports
    "CREATE TABLE loads (
        id TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        state TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX loads_state ON loads(state);
    CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        load_id TEXT NOT NULL REFERENCES loads(id),
        url TEXT NOT NULL,
        region TEXT NOT NULL,
        agent TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        status INTEGER NOT NULL,
        ttfb_ms REAL,
        load_ms REAL,
        note TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX reports_url ON reports(url, id DESC);
    CREATE INDEX reports_region ON reports(region, id DESC);
    CREATE INDEX reports_load ON reports(load_id);",
    // 2: where each region's agents were last seen, for fallback placement after a restart
    "CREATE TABLE region_coords (
        region TEXT PRIMARY KEY,
        coord TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );",
    // 3: members' underlay endpoints, rejoined after a restart (like Serf's snapshot)
    "CREATE TABLE known_peers (
        name TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is full (disk full?): {0}")]
    Full(rusqlite::Error),
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(
        "the database was written by a newer vantage (schema {found}, this one knows {known})"
    )]
    Newer { found: i64, known: usize },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e),
            _ => StoreError::Sql(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A handle to the database; clones share one connection. Calls block: run them on a blocking
/// thread (`Store::call`).
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .expect("store calls do not panic")
    }

    /// Writes a load's whole status (insert or replace); reports are kept apart.
    pub async fn put_load(&self, load: &LoadStatus) -> Result<()> {
        let load = strip_reports(load);
        self.call(move |c| put_load(c, &load)).await
    }

    /// Stores a region's report and the load status that records it, in one transaction.
    pub async fn put_report(&self, load: &LoadStatus, report: StoredReport) -> Result<i64> {
        let load = strip_reports(load);
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = insert_report(&tx, &report)?;
            let mut load = load;
            for t in &mut load.targets {
                if t.region == report.region && t.report_id.is_none() {
                    t.report_id = Some(id);
                    t.state = LoadState::Done;
                    break;
                }
            }
            put_load(&tx, &load)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// A load with its reports.
    pub async fn load(&self, id: String) -> Result<Option<LoadStatus>> {
        self.call(move |c| {
            let body: Option<String> = c
                .query_row("SELECT body FROM loads WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?;
            let Some(body) = body else { return Ok(None) };
            let mut load: LoadStatus = serde_json::from_str(&body)?;
            let mut q = c.prepare("SELECT body FROM reports WHERE load_id = ?1 ORDER BY id")?;
            let rows = q.query_map([&id], |r| r.get::<_, String>(0))?;
            for b in rows {
                load.reports.push(serde_json::from_str(&b?)?);
            }
            Ok(Some(load))
        })
        .await
    }

    /// Loads not yet done or failed, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<LoadStatus>> {
        self.call(|c| {
            let mut q = c.prepare(
                "SELECT body FROM loads WHERE state IN ('queued', 'running') ORDER BY created_ms",
            )?;
            let rows = q.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for b in rows {
                out.push(serde_json::from_str(&b?)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn report(&self, id: i64) -> Result<Option<StoredReport>> {
        self.call(move |c| {
            let body: Option<String> = c
                .query_row("SELECT body FROM reports WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
        })
        .await
    }

    /// History, newest first.
    pub async fn reports(
        &self,
        url: Option<String>,
        region: Option<String>,
        limit: usize,
    ) -> Result<Vec<ReportSummary>> {
        self.call(move |c| {
            let mut q = c.prepare(
                "SELECT id, load_id, url, region, agent, started_ms, status, ttfb_ms, load_ms, note
                 FROM reports
                 WHERE (?1 IS NULL OR url = ?1) AND (?2 IS NULL OR region = ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = q.query_map(params![url, region, limit as i64], |r| {
                Ok(ReportSummary {
                    id: r.get(0)?,
                    load_id: r.get(1)?,
                    url: r.get(2)?,
                    region: r.get(3)?,
                    agent: r.get(4)?,
                    started_unix_ms: r.get::<_, i64>(5)? as u64,
                    status: r.get::<_, i64>(6)? as u16,
                    ttfb_ms: r.get(7)?,
                    load_ms: r.get(8)?,
                    note: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// How many loads are in each state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, u64)>> {
        self.call(|c| {
            let mut q = c.prepare("SELECT state, COUNT(*) FROM loads GROUP BY state")?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Remembers where each region's agents were last seen (region, encoded coordinate).
    pub async fn put_region_coords(&self, rows: Vec<(String, String)>, now_ms: u64) -> Result<()> {
        self.upsert(
            "INSERT INTO region_coords (region, coord, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(region) DO UPDATE SET coord = ?2, updated_ms = ?3",
            rows,
            now_ms,
        )
        .await
    }

    /// Remembers members' underlay endpoints (name, `host:port`).
    pub async fn put_known_peers(&self, rows: Vec<(String, String)>, now_ms: u64) -> Result<()> {
        self.upsert(
            "INSERT INTO known_peers (name, endpoint, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET endpoint = ?2, updated_ms = ?3",
            rows,
            now_ms,
        )
        .await
    }

    /// Runs a key/value upsert for each row, in one transaction.
    async fn upsert(
        &self,
        sql: &'static str,
        rows: Vec<(String, String)>,
        now_ms: u64,
    ) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            for (k, v) in &rows {
                tx.execute(sql, params![k, v, now_ms as i64])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Endpoints of members seen in the last `max_age_ms`, newest first.
    pub async fn known_peers(&self, now_ms: u64, max_age_ms: u64) -> Result<Vec<String>> {
        self.call(move |c| {
            let mut q = c.prepare(
                "SELECT endpoint FROM known_peers WHERE updated_ms >= ?1 ORDER BY updated_ms DESC LIMIT 64",
            )?;
            let since = now_ms.saturating_sub(max_age_ms) as i64;
            let rows = q.query_map([since], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub async fn region_coords(&self) -> Result<Vec<(String, String)>> {
        self.call(|c| {
            let mut q = c.prepare("SELECT region, coord FROM region_coords")?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

fn migrate(c: &Connection) -> Result<()> {
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::Newer {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        c.execute_batch(&format!(
            "BEGIN; {m}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))?;
        tracing::info!(schema = i + 1, "database migrated");
    }
    Ok(())
}

/// Reports live in their own table; the load row keeps only their ids.
fn strip_reports(load: &LoadStatus) -> LoadStatus {
    LoadStatus {
        reports: Vec::new(),
        ..load.clone()
    }
}

fn put_load(c: &Connection, load: &LoadStatus) -> Result<()> {
    c.execute(
        "INSERT INTO loads (id, created_ms, finished_ms, state, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET finished_ms = ?3, state = ?4, body = ?5",
        params![
            load.id,
            load.created_unix_ms as i64,
            load.finished_unix_ms.map(|t| t as i64),
            load.state.as_str(),
            serde_json::to_string(load)?
        ],
    )?;
    Ok(())
}

fn insert_report(c: &Connection, r: &StoredReport) -> Result<i64> {
    let run = r
        .report
        .summary
        .as_ref()
        .and_then(|s| r.report.runs.get(s.median_run))
        .or_else(|| r.report.runs.first());
    c.execute(
        "INSERT INTO reports (load_id, url, region, agent, started_ms, status, ttfb_ms, load_ms, note, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '')",
        params![
            r.load_id,
            r.report.job.url,
            r.region,
            r.agent,
            r.report.started_unix_ms as i64,
            run.map_or(0, |r| r.status as i64),
            run.map(|r| r.timing.response_start_ms),
            run.and_then(|r| r.timing.load_ms),
            r.note,
        ],
    )?;
    let id = c.last_insert_rowid();
    let stored = StoredReport { id, ..r.clone() };
    c.execute(
        "UPDATE reports SET body = ?1 WHERE id = ?2",
        params![serde_json::to_string(&stored)?, id],
    )?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::api::{LoadRequest, TargetStatus};
    use vantage_proto::{JobSpec, Report, SCHEMA_VERSION};

    fn load(id: &str) -> LoadStatus {
        LoadStatus {
            id: id.into(),
            state: LoadState::Running,
            created_unix_ms: 1,
            finished_unix_ms: None,
            request: LoadRequest::new("http://example.com/"),
            targets: vec![TargetStatus {
                region: "sin".into(),
                state: LoadState::Running,
                attempts: vec![],
                note: None,
                report_id: None,
                failure: None,
            }],
            failure: None,
            reports: vec![],
        }
    }

    fn report(load_id: &str) -> StoredReport {
        StoredReport {
            id: 0,
            load_id: load_id.into(),
            region: "sin".into(),
            agent: "sin-1".into(),
            agent_region: "sin".into(),
            attempts: vec![],
            note: None,
            estimated_rtt_ms: Some(12.5),
            report: Report {
                schema: SCHEMA_VERSION,
                job: JobSpec::new("http://example.com/"),
                started_unix_ms: 5,
                region: "sin".into(),
                node: "sin-1".into(),
                browser_version: "x".into(),
                user_agent: "y".into(),
                runs: vec![],
                summary: None,
            },
        }
    }

    #[tokio::test]
    async fn loads_and_reports_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("vantage-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.db");
        {
            let s = Store::open(&path).unwrap();
            s.put_load(&load("a")).await.unwrap();
            s.put_load(&load("b")).await.unwrap();
            let id = s.put_report(&load("a"), report("a")).await.unwrap();
            let mut done = s.load("a".into()).await.unwrap().unwrap();
            assert_eq!(done.targets[0].report_id, Some(id));
            done.state = LoadState::Done;
            s.put_load(&done).await.unwrap();
        }
        let s = Store::open(&path).unwrap();
        let a = s.load("a".into()).await.unwrap().unwrap();
        assert_eq!((a.state, a.reports.len()), (LoadState::Done, 1));
        assert_eq!(a.reports[0].id, a.targets[0].report_id.unwrap());
        let open: Vec<String> = s
            .unfinished()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(open, ["b"]);
        let hist = s
            .reports(Some("http://example.com/".into()), None, 10)
            .await
            .unwrap();
        assert_eq!((hist.len(), hist[0].agent.as_str()), (1, "sin-1"));
        assert!(s
            .reports(None, Some("ams".into()), 10)
            .await
            .unwrap()
            .is_empty());
        assert!(s.load("zzz".into()).await.unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        let e = migrate(&c).unwrap_err().to_string();
        assert!(e.contains("newer vantage"), "{e}");
    }
}
