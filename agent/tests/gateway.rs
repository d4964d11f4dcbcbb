//! The CDP gateway over the mesh: a controller member reads `/json/version` with URLs rewritten to
//! the gateway, then a stock client (chromiumoxide) drives the browser through it and completes a
//! navigation. A local TCP forwarder, as `vantage connect` gives, carries the client's HTTP and
//! WebSocket over overlay streams. A member with role=agent is refused.

mod common;

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::Browser;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_agent::authority::Authority;
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

/// An agent's gateway on a real browser, a controller and another agent as mesh peers.
struct Fleet {
    agent: Node,
    controller: Node,
    other_agent: Node,
    sup: vantage_agent::chromium::Supervisor,
    gw: SocketAddrV6,
}

async fn fleet() -> Fleet {
    let agent = node(1);
    let controller = node(2);
    let other_agent = node(3);
    for (a, b) in [(&agent, &controller), (&agent, &other_agent)] {
        a.add_peer(b.as_peer()).await.unwrap();
        b.add_peer(a.as_peer()).await.unwrap();
    }
    let sup = common::ready(common::chromium()).await;
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
    let (r, s) = (Arc::new(Authority::Roles(roles.clone())), sup.clone());
    tokio::spawn(async move {
        while let Ok((stream, from)) = listener.accept().await {
            let (r, s) = (r.clone(), s.clone());
            tokio::spawn(
                async move { gateway::serve(stream, SocketAddr::V6(from), me, &r, &s).await },
            );
        }
    });
    let gw = SocketAddrV6::new(agent.overlay_addr(), GATEWAY, 0, 0);
    Fleet {
        agent,
        controller,
        other_agent,
        sup,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_drives_the_browser_through_the_gateway_and_an_agent_is_refused() {
    let origin = Origin::start().await.unwrap();
    let Fleet {
        agent,
        controller,
        other_agent,
        sup,
        gw,
    } = fleet().await;

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
    // /json/new opens a tab and answers with its URLs, rewritten too
    let (status, new) = get(&controller, gw, "/json/new?about:blank").await;
    assert!(status.contains("200"), "{status} {new}");
    let tab: serde_json::Value = serde_json::from_str(&new).unwrap();
    let tab_ws = tab["webSocketDebuggerUrl"].as_str().unwrap_or_default();
    assert!(
        tab_ws.starts_with(&format!("ws://{gw_host}/devtools/page/")),
        "{new}"
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
    // a stock client: chromiumoxide reads /json/version through the forwarder (so the rewrite
    // must point it back at the forwarder), opens the WebSocket, and drives a page
    // (told not to turn certificate checks off, which the gateway refuses)
    let config = HandlerConfig {
        ignore_https_errors: false,
        ..HandlerConfig::default()
    };
    let (browser, mut handler) =
        Browser::connect_with_config(format!("http://{local_addr}"), config)
            .await
            .expect("chromiumoxide connects through the gateway");
    // Chromium's own port is reachable on this machine too; make sure the client went via us
    assert!(
        browser
            .websocket_address()
            .starts_with(&format!("ws://{local_addr}/devtools/browser/")),
        "{}",
        browser.websocket_address()
    );
    let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let url = origin.url("/index.html");
    let page = tokio::time::timeout(Duration::from_secs(30), async {
        let page = browser.new_page("about:blank").await?;
        page.goto(url.as_str()).await?;
        page.wait_for_navigation().await?;
        Ok::<_, chromiumoxide::error::CdpError>(page)
    })
    .await
    .expect("navigation through the gateway timed out")
    .expect("navigation through the gateway");
    let path: String = page
        .evaluate("location.pathname")
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(path, "/index.html");
    let title = page.get_title().await.unwrap();
    assert_eq!(title.as_deref(), Some("Vantage test origin"));
    page.close().await.unwrap();
    drop(browser);
    pump.abort();
    sup.stop().await;
}

/// Sends one CDP command on `ws` and returns the answer with its id.
async fn call<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    id: u64,
    command: serde_json::Value,
) -> serde_json::Value {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut command = command;
    command["id"] = id.into();
    ws.send(Message::text(command.to_string())).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("an answer within 30 s")
            .expect("the session stays open")
            .unwrap();
        let Message::Text(t) = m else { continue };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        if v["id"] == id {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_a_proxied_context_and_turning_certificate_checks_off() {
    let f = fleet().await;
    let (status, body) = get(&f.controller, f.gw, "/json/version").await;
    assert!(status.contains("200"), "{status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ws_url = v["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
    let stream = f.controller.tcp_connect(f.gw).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url.as_str(), stream)
        .await
        .expect("a WebSocket session through the gateway");

    let refused = [
        serde_json::json!({ "method": "Target.createBrowserContext",
            "params": { "proxyServer": "http://127.0.0.1:9" } }),
        serde_json::json!({ "method": "Security.setIgnoreCertificateErrors",
            "params": { "ignore": true } }),
        serde_json::json!({ "method": "Security.setOverrideCertificateErrors",
            "params": { "override": true } }),
        // the same, wrapped for a target
        serde_json::json!({ "method": "Target.sendMessageToTarget", "params": {
            "targetId": "any",
            "message": r#"{"id":1,"method":"Security.setIgnoreCertificateErrors","params":{"ignore":true}}"#,
        } }),
    ];
    for (id, command) in (1..).zip(refused) {
        let answer = call(&mut ws, id, command.clone()).await;
        let msg = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("refused by the vantage cdp gateway"),
            "{command} was not refused: {answer}"
        );
    }
    // the browser never saw the proxied context, and an ordinary one is still served
    let contexts = call(
        &mut ws,
        10,
        serde_json::json!({ "method": "Target.getBrowserContexts" }),
    )
    .await;
    assert_eq!(
        contexts["result"]["browserContextIds"],
        serde_json::json!([]),
        "{contexts}"
    );
    let created = call(
        &mut ws,
        11,
        serde_json::json!({ "method": "Target.createBrowserContext", "params": {} }),
    )
    .await;
    assert!(
        created["result"]["browserContextId"].is_string(),
        "{created}"
    );
    f.sup.stop().await;
}
