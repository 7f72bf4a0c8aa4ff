//! Protected by default: loopback only without a token; the token by
//! registration field or bearer header; `--insecure` opens up.

use test_support::{Coordinator, Dial, Raw};

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

/// Another machine, as the coordinator sees it: a loopback source address
/// the coordinator is told (`--not-local`) to treat as remote.
const ELSEWHERE: &str = "127.0.0.7";

#[tokio::test]
async fn other_machines_need_tls_and_a_credential() {
    let elsewhere: std::net::IpAddr = ELSEWHERE.parse().unwrap();
    let c = Coordinator::start(bin(), &["--not-local", ELSEWHERE]);
    // Plaintext from another machine: refused at the upgrade, naming the fix.
    let dial = Dial { source: Some(elsewhere), ..Dial::default() };
    let refused = Raw::open(&c.ws_url, dial.clone()).await.err().expect("refused");
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("wss://") && refused.body.contains("--insecure-plaintext"));
    // …and on the HTTP port, whatever the request.
    let http = c.http().trim_start_matches("http://");
    let get = "GET /cluster/health HTTP/1.1\r\nHost: x\r\n\r\n";
    let body = raw_http(http, Some(elsewhere), get).await;
    assert!(body.starts_with("HTTP/1.1 403") && body.contains("tls_required"), "{body}");
    // TLS from another machine without a credential: registration refused.
    let tls = Dial { source: Some(elsewhere), ca_hash: Some(&c.ca_hash), ..Dial::default() };
    let mut raw = Raw::open(&c.wss_url(), tls.clone()).await.unwrap();
    raw.send(r#"{"msg_type": "register_gamer", "gamer_id": "g"}"#).await;
    assert_eq!(raw.expect("error").await["code"], "unauthorized");
    assert_eq!(u16::from(raw.closed().await.expect("close").code), 1008);
    // With the client token it is in.
    let mut raw = Raw::open(&c.wss_url(), tls).await.unwrap();
    let secret = token_secret(&c.client_token);
    raw.send(&format!(r#"{{"msg_type": "register_gamer", "gamer_id": "g", "token": "{secret}"}}"#))
        .await;
    assert_eq!(raw.expect("registration_ack").await["status"], "registered");
    // Loopback plaintext, the seed's way, is still fine.
    Raw::gamer(&c.ws_url, "local").await;
    // --insecure --insecure-plaintext opens everything to everyone.
    let open = Coordinator::start(
        bin(),
        &["--not-local", ELSEWHERE, "--insecure", "--insecure-plaintext"],
    );
    let mut raw = Raw::open(&open.ws_url, dial).await.unwrap();
    raw.send(r#"{"msg_type": "register_gamer", "gamer_id": "remote"}"#).await;
    assert_eq!(raw.expect("registration_ack").await["status"], "registered");
}

/// The secret part of a join token (`lgj1-<64 hex>-<secret>`).
pub fn token_secret(token: &str) -> String {
    token["lgj1-".len() + 65..].to_owned()
}

/// Sends raw HTTP from `source` and returns what came back.
pub async fn raw_http(addr: &str, source: Option<std::net::IpAddr>, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = test_support::tcp_from(addr, source).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(test_support::WAIT, stream.read(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out[..n]).into_owned()
}
