//! The CDP gateway over the mesh: a controller member reads `/json/version` with URLs rewritten to
//! the gateway, then drives the browser through it (a local TCP forwarder, as `vantage connect`
//! gives, carries a CDP client's WebSocket over an overlay stream) and completes a navigation. A
//! member with role=agent is refused.

mod common;

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_agent::cdp::Cdp;
use vantage_agent::chromium::{ChromiumConfig, Supervisor};
use vantage_agent::gateway::{self, Roles};
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey};
use vantage_tests::origin::Origin;

const GATEWAY: u16 = 9222;

fn node(seed: u8) -> Node {
    let mut k = [seed; 32];
    k[0] &= 248;
    let cfg = NodeConfig::new(PrivateKey::from_bytes(k), PresharedKey::from_bytes([3; 32]));
    Node::bind(cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
}

async fn get(client: &Node, to: SocketAddrV6, path: &str) -> (String, String) {
    let mut s = client.tcp_connect(to).await.unwrap();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: [{}]:{}\r\n\r\n",
            to.ip(),
            to.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_drives_the_browser_through_the_gateway_and_an_agent_is_refused() {
    let origin = Origin::start().await.unwrap();
    let agent = node(1);
    let controller = node(2);
    let other_agent = node(3);
    for (a, b) in [(&agent, &controller), (&agent, &other_agent)] {
        a.add_peer(b.as_peer()).await.unwrap();
        b.add_peer(a.as_peer()).await.unwrap();
    }
    let sup = Supervisor::spawn(ChromiumConfig {
        ..common::chromium()
    });
    sup.ready(Duration::from_secs(60)).await.unwrap();
    // what gossip would have told the agent about its peers
    let roles: Roles = Arc::default();
    roles
        .write()
        .unwrap()
        .insert(IpAddr::V6(controller.overlay_addr()), "controller".into());
    roles
        .write()
        .unwrap()
        .insert(IpAddr::V6(other_agent.overlay_addr()), "agent".into());
    let listener = agent.tcp_listen(GATEWAY).await.unwrap();
    let me = SocketAddr::V6(listener.local_addr());
    let (r, s) = (roles.clone(), sup.clone());
    tokio::spawn(async move {
        while let Ok((stream, from)) = listener.accept().await {
            let (r, s) = (r.clone(), s.clone());
            tokio::spawn(
                async move { gateway::serve(stream, SocketAddr::V6(from), me, &r, &s).await },
            );
        }
    });
    let gw = SocketAddrV6::new(agent.overlay_addr(), GATEWAY, 0, 0);

    // an agent is refused, with the reason
    let (status, body) = get(&other_agent, gw, "/json/version").await;
    assert!(status.contains("403"), "{status} {body}");
    assert!(body.contains("role=controller"), "{body}");

    // the controller sees DevTools URLs that point at the gateway, not at 127.0.0.1
    let (status, body) = get(&controller, gw, "/json/version").await;
    assert!(status.contains("200"), "{status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ws = v["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
    let gw_host = format!("[{}]:{GATEWAY}", agent.overlay_addr());
    assert!(
        ws.starts_with(&format!("ws://{gw_host}/devtools/browser/")),
        "{ws}"
    );
    let (status, list) = get(&controller, gw, "/json/list").await;
    assert!(
        status.contains("200") && !list.contains("127.0.0.1:"),
        "{list}"
    );

    // a local forwarder carries the CDP client over the mesh, as `vantage connect` would
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    let c = controller.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = local.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = c.tcp_connect(gw).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let cdp = Cdp::connect(&ws.replace(&gw_host, &local_addr.to_string()))
        .await
        .unwrap();
    let target = cdp
        .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
        .await
        .unwrap();
    let attached = cdp
        .call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await
        .unwrap();
    let session = attached["sessionId"].as_str().unwrap().to_owned();
    let mut events = cdp.subscribe(&session);
    cdp.call(Some(&session), "Page.enable", json!({}))
        .await
        .unwrap();
    cdp.call(
        Some(&session),
        "Page.navigate",
        json!({ "url": origin.url("/index.html") }),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = events.recv().await {
            if e.method == "Page.loadEventFired" {
                return;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("no load event through the gateway");
    let title = cdp
        .call(
            Some(&session),
            "Runtime.evaluate",
            json!({ "expression": "location.pathname", "returnByValue": true }),
        )
        .await
        .unwrap();
    assert_eq!(title["result"]["value"], "/index.html");
    sup.stop().await;
}
