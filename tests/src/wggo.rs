//! A stock WireGuard peer: `wireguard-go` on a TUN inside a network namespace, configured with `wg`.

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vantage_mesh::{OverlayPrefix, PresharedKey, PrivateKey, PublicKey};

use crate::netns::{unique_tag, Netns};

/// A running wireguard-go interface, stopped on drop.
#[derive(Debug)]
pub struct WgGo {
    pub iface: String,
    pub key: PrivateKey,
    pub overlay: Ipv6Addr,
    ns_name: String,
    child: Child,
}

/// One peer of a wireguard-go interface.
#[derive(Debug, Clone)]
pub struct WgPeer {
    pub key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub overlay: Ipv6Addr,
}

impl WgGo {
    /// Starts wireguard-go in `ns` with a fresh key, listening on `port`, addressed in `prefix`.
    pub fn start(ns: &Netns, port: u16, prefix: &OverlayPrefix) -> Result<Self> {
        let iface = format!("wg{}", unique_tag());
        let key = PrivateKey::generate(&mut rand_core_os());
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "wireguard-go", "-f", &iface])
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .env("LOG_LEVEL", "error")
            .stdout(Stdio::null())
            // it prints a banner on every start; failures surface through `wg set` instead
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start wireguard-go; .ci/run installs it")?;
        let overlay = prefix.address_of(&key.public_key());
        let mut me = Self {
            iface,
            key,
            overlay,
            ns_name: ns.name.clone(),
            child,
        };
        let sock = format!("/var/run/wireguard/{}.sock", me.iface);
        let t = Instant::now();
        while !std::path::Path::new(&sock).exists() {
            if let Some(status) = me.child.try_wait()? {
                bail!("wireguard-go exited early with {status}");
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("wireguard-go did not create {sock} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        me.wg(
            &[
                "set",
                &me.iface.clone(),
                "listen-port",
                &port.to_string(),
                "private-key",
                "/dev/stdin",
            ],
            Some(&me.key.to_base64()),
        )?;
        ns.ip(&["link", "set", &me.iface, "mtu", "1280", "up"])?;
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{overlay}/64"),
            "dev",
            &me.iface,
            "nodad",
        ])?;
        Ok(me)
    }

    fn wg(&self, args: &[&str], stdin: Option<&str>) -> Result<()> {
        let mut all = vec!["netns", "exec", self.ns_name.as_str(), "wg"];
        all.extend_from_slice(args);
        let mut child = Command::new("ip")
            .args(&all)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(s) = stdin {
            child.stdin.take().expect("piped").write_all(s.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "wg {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Adds a peer with the cluster PSK, allowed to use exactly its overlay address.
    pub fn add_peer(&self, peer: &WgPeer, psk: &PresharedKey) -> Result<()> {
        let key = peer.key.to_base64();
        let allowed = format!("{}/128", peer.overlay);
        let mut args = vec![
            "set",
            self.iface.as_str(),
            "peer",
            key.as_str(),
            "preshared-key",
            "/dev/stdin",
            "allowed-ips",
            allowed.as_str(),
        ];
        let ep = peer.endpoint.map(|e| e.to_string());
        if let Some(ep) = &ep {
            args.extend_from_slice(&["endpoint", ep.as_str()]);
        }
        self.wg(&args, Some(&psk.to_base64()))
    }

    /// Makes `self` and `other` peers of each other with `psk`: `self` reaches `other` at
    /// `other_at`, and `other` reaches `self` at `self_at`.
    pub fn pair_with(
        &self,
        other: &WgGo,
        other_at: SocketAddr,
        self_at: SocketAddr,
        psk: &PresharedKey,
    ) -> Result<()> {
        for (me, peer, at) in [(self, other, other_at), (other, self, self_at)] {
            me.add_peer(
                &WgPeer {
                    key: peer.key.public_key(),
                    endpoint: Some(at),
                    overlay: peer.overlay,
                },
                psk,
            )?;
        }
        Ok(())
    }

    /// `wg show <iface> latest-handshakes` as (peer, unix seconds).
    pub fn latest_handshakes(&self) -> Result<Vec<(String, u64)>> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "wg",
                "show",
                &self.iface,
                "latest-handshakes",
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
            })
            .collect())
    }
}

impl Drop for WgGo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.iface));
    }
}

fn rand_core_os() -> impl rand_core::RngCore + rand_core::CryptoRng {
    rand_core::OsRng
}
