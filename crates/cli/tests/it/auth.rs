//! Protected by default: loopback only without a token; the token by
//! registration field or bearer header; `--insecure` opens up.

use test_support::{Coordinator, Raw};

use crate::bin;

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let c = Coordinator::start(bin(), &["--token", "s3cret"]);
    // Without it: refused, connection closed with 1008.
    let mut raw = Raw::connect(&c.ws_url).await;
    raw.send(r#"{"msg_type": "register_peer", "peer_id": "p", "capabilities": {}}"#).await;
    let err = raw.expect("error").await;
    assert_eq!(err["code"], "unauthorized");
    assert_eq!(u16::from(raw.closed().await.expect("close").code), 1008);
    // Wrong token in the field: same.
    let mut raw = Raw::connect(&c.ws_url).await;
    raw.send(r#"{"msg_type": "register_gamer", "gamer_id": "g", "token": "guess"}"#).await;
    assert_eq!(raw.expect("error").await["code"], "unauthorized");
    // Messages before registering are refused but keep the connection.
    let mut raw = Raw::connect(&c.ws_url).await;
    raw.send(r#"{"msg_type": "heartbeat", "peer_id": "p"}"#).await;
    assert_eq!(raw.expect("error").await["code"], "unauthorized");
    // Right token in the field.
    raw.send(
        r#"{"msg_type": "register_peer", "peer_id": "p", "capabilities": {}, "token": "s3cret"}"#,
    )
    .await;
    assert_eq!(raw.expect("registration_ack").await["status"], "registered");
    // Right token in the header.
    let mut raw = Raw::connect_with(&c.ws_url, Some("s3cret")).await.unwrap();
    raw.send(r#"{"msg_type": "register_gamer", "gamer_id": "g"}"#).await;
    assert_eq!(raw.expect("registration_ack").await["status"], "registered");
    // Wrong token in the header: refused at the upgrade.
    let refused = Raw::connect_with(&c.ws_url, Some("nope")).await.err().expect("refused");
    assert_eq!(refused.status, 401);
    // The token never appears in the logs.
    assert!(!c.proc.log().contains("s3cret"));
}

#[tokio::test]
async fn workers_and_clients_present_the_token() {
    let c = Coordinator::start(bin(), &["--token", "t0k"]);
    let _w = test_support::worker(bin(), &c.ws_url, "w", &["--token", "t0k"]);
    let out = std::process::Command::new(bin())
        .args([
            "task",
            "submit",
            "--coordinator",
            &c.ws_url,
            "--token",
            "t0k",
            "--type",
            "echo",
            "--data",
            "[1]",
            "--wait",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<String>(), "[1]");
    // A worker with the wrong token stops with a clear error instead of retrying forever.
    let mut bad = test_support::worker(bin(), &c.ws_url, "bad", &["--token", "wrong"]);
    assert_eq!(bad.wait(), Some(1));
    assert!(bad.log().contains("refused"), "{}", bad.log());
}

/// A local address other machines would use, if this machine has one.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks a route.
    sock.connect("10.255.255.255:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn protected_mode_refuses_non_loopback_clients_without_a_token() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("SKIP: this machine has no non-loopback address to test protected mode with");
        return;
    };
    let c = Coordinator::start(bin(), &["--bind", "0.0.0.0:0"]);
    let port = c.ws_url.rsplit(':').next().unwrap();
    let remote_url = format!("ws://{ip}:{port}");
    let refused = Raw::connect_with(&remote_url, None).await.err().expect("refused");
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("protected mode"), "{}", refused.body);
    // Loopback is still fine.
    Raw::gamer(&format!("ws://127.0.0.1:{port}"), "local").await;
    // --insecure opens it.
    let open = Coordinator::start(bin(), &["--bind", "0.0.0.0:0", "--insecure"]);
    let port = open.ws_url.rsplit(':').next().unwrap();
    Raw::gamer(&format!("ws://{ip}:{port}"), "remote").await;
}
