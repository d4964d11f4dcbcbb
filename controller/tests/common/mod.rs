//! A fleet for end-to-end tests: a controller process and agent processes (each with a real
//! Chromium), their WireGuard underlay behind the `vantage-wan` emulator with the built-in
//! 20-region matrix (or another), and an HTTP client for the controller's API.

#![allow(dead_code)]

pub mod reports;
pub mod schema;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vantage_mesh::{PresharedKey, PrivateKey};
use vantage_proto::api::{LoadRequest, LoadStatus, RegionInfo};
use vantage_wan::{Matrix, Wan, WanConfig};

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// The `vantage` binary under test. Cargo names it only for tests and benches; an example (which
/// runs from `target/<profile>/examples/`) finds it in its profile's directory, built if missing.
pub fn vantage_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_vantage") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().expect("the example's own path");
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>");
            built(dir.join("vantage"), "vantage")
        }
    }
}

/// The agent binary, built next to `vantage` (built here if this package is tested alone).
pub fn agent_bin() -> PathBuf {
    built(
        vantage_bin().with_file_name("vantage-agent"),
        "vantage-agent",
    )
}

/// `path`, after `cargo build -p package` (in this build's profile) if it does not exist.
fn built(path: PathBuf, package: &str) -> PathBuf {
    if !path.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", package, "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("run cargo build -p {package}: {e}"));
        assert!(status.success(), "cargo build -p {package} failed");
    }
    path
}

pub fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A key from a fixed byte, so runs reproduce.
pub fn key(b: u8) -> PrivateKey {
    let mut k = [b; 32];
    k[0] &= 248;
    k[31] = (k[31] & 127) | 64;
    PrivateKey::from_bytes(k)
}

/// A process that is killed when dropped, with its output in a log file.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn term(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on a child we own
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where a member sits.
#[derive(Debug, Clone)]
pub struct Spot {
    pub name: String,
    pub region: String,
    pub real: SocketAddr,
    pub advertised: SocketAddr,
}

#[derive(Debug)]
pub struct Fleet {
    pub wan: Wan,
    pub dir: PathBuf,
    pub psk: PresharedKey,
    pub controller_key: PrivateKey,
    pub controller: Option<Proc>,
    pub controller_spot: Spot,
    pub api: SocketAddr,
    pub agents: Vec<(Spot, Option<Proc>)>,
    pub extra_serve_args: Vec<String>,
    pub http: reqwest::Client,
}

impl Fleet {
    /// Starts the controller in `controller_region` and one agent per region of `agents`.
    pub async fn start(
        name: &str,
        controller_region: &str,
        agents: &[&str],
        serve_args: &[&str],
    ) -> Fleet {
        Self::start_with_matrix(
            name,
            Matrix::builtin(),
            controller_region,
            agents,
            serve_args,
        )
        .await
    }

    /// [`Fleet::start`] with the WAN emulating `matrix` (which must name every region used).
    pub async fn start_with_matrix(
        name: &str,
        matrix: Matrix,
        controller_region: &str,
        agents: &[&str],
        serve_args: &[&str],
    ) -> Fleet {
        let dir = std::env::temp_dir().join(format!("vantage-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut wan = Wan::new(matrix, WanConfig::default()).unwrap();
        let real = free_udp();
        let cname = format!("ctl-{controller_region}");
        let advertised = wan.attach(&cname, controller_region, real).unwrap();
        let mut fleet = Fleet {
            wan,
            dir,
            psk: PresharedKey::from_bytes([42; 32]),
            controller_key: key(7),
            controller: None,
            controller_spot: Spot {
                name: cname,
                region: controller_region.into(),
                real,
                advertised,
            },
            api: free_tcp(),
            agents: Vec::new(),
            extra_serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::new(),
        };
        fleet.start_controller();
        for (i, region) in agents.iter().enumerate() {
            let name = format!("{region}-1");
            let real = free_udp();
            let advertised = fleet.wan.attach(&name, region, real).unwrap();
            let spot = Spot {
                name,
                region: region.to_string(),
                real,
                advertised,
            };
            let p = fleet.spawn_agent(&spot, 20 + i as u8);
            fleet.agents.push((spot, Some(p)));
        }
        fleet.wait_healthy(agents, Duration::from_secs(120)).await;
        fleet
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    fn log(&self, name: &str) -> (PathBuf, std::fs::File) {
        let path = self.dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        (path, f)
    }

    pub fn start_controller(&mut self) {
        let s = self.controller_spot.clone();
        let (log, f) = self.log(&s.name);
        let mut cmd = Command::new(vantage_bin());
        cmd.arg("serve")
            .args(["--psk", &self.psk.to_base64()])
            .args(["--private-key", &self.controller_key.to_base64()])
            .arg("--data-dir")
            .arg(self.dir.join(&s.name))
            .args([
                "--bind",
                &s.real.to_string(),
                "--advertise",
                &s.advertised.to_string(),
            ])
            .args(["--name", &s.name, "--region", &s.region])
            .args(["--listen", &self.api.to_string(), "--api-token", TOKEN])
            .args(["--allow-net", "127.0.0.0/8"])
            .args(&self.extra_serve_args)
            .env("RUST_LOG", "info")
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = cmd.spawn().expect("spawn vantage serve");
        self.controller = Some(Proc {
            name: s.name,
            child,
            log,
        });
    }

    fn spawn_agent(&self, s: &Spot, key_byte: u8) -> Proc {
        let (log, f) = self.log(&s.name);
        let mut cmd = Command::new(agent_bin());
        cmd.args(["--psk", &self.psk.to_base64()])
            .args(["--private-key", &key(key_byte).to_base64()])
            .arg("--data-dir")
            .arg(self.dir.join(&s.name))
            .args([
                "--bind",
                &s.real.to_string(),
                "--advertise",
                &s.advertised.to_string(),
            ])
            .args(["--name", &s.name, "--region", &s.region])
            .args(["--seeds", &self.controller_spot.advertised.to_string()])
            .args([
                "--controller-keys",
                &self.controller_key.public_key().to_base64(),
            ])
            .args(["--allow-net", "127.0.0.0/8", "--health-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = cmd.spawn().expect("spawn vantage-agent");
        Proc {
            name: s.name.clone(),
            child,
            log,
        }
    }

    pub fn agent(&mut self, region: &str) -> &mut Proc {
        self.agents
            .iter_mut()
            .find(|(s, _)| s.region == region)
            .and_then(|(_, p)| p.as_mut())
            .unwrap()
    }

    /// Waits until the controller answers and sees a healthy agent in each region.
    pub async fn wait_healthy(&self, regions: &[&str], limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(r) = self.get::<Vec<RegionInfo>>("/api/regions").await {
                let ok = regions
                    .iter()
                    .all(|want| r.iter().any(|i| i.region == *want && i.healthy_agents > 0));
                if ok {
                    return;
                }
            }
            if start.elapsed() > limit {
                panic!(
                    "the fleet did not become healthy within {limit:?}; logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "{path}: {} {}",
            r.status(),
            r.text().await?
        );
        Ok(r.json().await?)
    }

    /// Submits a load; the answer's status and body.
    pub async fn post_load(&self, req: &LoadRequest) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.url("/api/loads"))
            .bearer_auth(TOKEN)
            .json(req)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    pub async fn submit(&self, req: &LoadRequest) -> String {
        let (status, body) = self.post_load(req).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Polls a load until it is done or failed.
    pub async fn wait_load(&self, id: &str, limit: Duration) -> LoadStatus {
        let start = Instant::now();
        loop {
            if let Ok(s) = self.get::<LoadStatus>(&format!("/api/loads/{id}")).await {
                if s.state.is_terminal() {
                    return s;
                }
                if start.elapsed() > limit {
                    panic!(
                        "load {id} not over within {limit:?}: {s:#?}; logs in {}",
                        self.dir.display()
                    );
                }
            } else if start.elapsed() > limit {
                panic!(
                    "load {id} unreadable for {limit:?}; logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the `vantage` CLI against this controller.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(vantage_bin())
            .args([
                "--server",
                &format!("http://{}", self.api),
                "--token",
                TOKEN,
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vantage")
    }

    pub fn log_dir(&self) -> &Path {
        &self.dir
    }
}

/// The workspace root (where `fly.toml`, `docker/` and `README.md` are).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A file of the repository, by its path from the workspace root.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}
