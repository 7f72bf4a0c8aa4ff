//! Security across real networks: joining over pinned TLS, refusing the
//! wrong CA before any secret goes out, revocation, rotation, the identity
//! rule, RFC 6455 close codes, and secrets kept out of trace logs.

use serde_json::{Value, json};
use test_support::{Coordinator, Dial, Raw, WAIT};

use crate::auth::token_secret;
use crate::bin;

fn api(c: &Coordinator, key: Option<&str>) -> client::api::Api {
    client::api::Api::new(c.http(), key.map(str::to_owned))
}

/// Waits until `peer` is listed as a connected worker.
async fn until_worker(c: &Coordinator, peer: &str) -> Value {
    let api = api(c, None);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(w) = api.get(&format!("/cluster/workers/{peer}")).await {
            return w;
        }
        assert!(std::time::Instant::now() < deadline, "worker {peer} never joined");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A raw TLS peer that joins with the worker join token and registers with
/// the credential it got; returns the connection and the credential.
async fn joined_peer(c: &Coordinator, peer: &str) -> (Raw, String) {
    let dial = Dial { ca_hash: Some(&c.ca_hash), ..Dial::default() };
    let mut raw = Raw::open(&c.wss_url(), dial).await.unwrap();
    let secret = token_secret(&c.worker_token);
    raw.send_json(&json!({"msg_type": "join", "peer_id": peer, "token": secret})).await;
    let joined = raw.expect("joined").await;
    let credential = joined["credential"].as_str().unwrap().to_owned();
    assert!(credential.starts_with("lgw_"), "{joined}");
    raw.send_json(&json!({"msg_type": "register_peer", "peer_id": peer, "capabilities": {},
                          "token": credential}))
        .await;
    assert_eq!(raw.expect("registration_ack").await["status"], "registered");
    (raw, credential)
}

#[tokio::test]
async fn a_worker_joins_over_tls_with_the_join_token_and_keeps_its_credential() {
    let c = Coordinator::start(bin(), &[]);
    assert_eq!(c.ca_hash.len(), 64, "the banner prints the CA pin");
    assert!(c.worker_token.starts_with(&format!("lgj1-{}-", c.ca_hash)));
    let dir = tempfile::tempdir().unwrap();
    let cred_file = dir.path().join("w1.json");
    let cred = cred_file.to_str().unwrap();
    let join = ["--join", c.worker_token.as_str(), "--credential-file", cred];
    let mut w = test_support::worker(bin(), &c.wss_url(), "w1", &join);
    until_worker(&c, "w1").await;
    // A client over wss:// with the client token (which pins the CA too).
    let out = std::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &c.wss_url(), "--token", &c.client_token])
        .args(["--type", "echo", "--data", "[7]", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<String>(), "[7]");
    // The credential is kept, readable by its owner only, and used next time.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cred_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    w.terminate();
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&cred_file).unwrap()).unwrap();
    assert_eq!(kept["ca_sha256"], c.ca_hash.as_str());
    let mut again = test_support::worker(bin(), &c.wss_url(), "w1", &join);
    until_worker(&c, "w1").await;
    again.terminate();
    assert!(!again.log().contains("joined the cluster"), "{}", again.log());
    // Without TLS the pin cannot be checked: refused before connecting.
    let mut plain = test_support::worker(bin(), &c.ws_url, "w2", &["--join", &c.worker_token]);
    assert_eq!(plain.wait(), Some(1));
    assert!(plain.log().contains("wss://"), "{}", plain.log());
}

#[tokio::test]
async fn a_wrong_ca_is_refused_before_any_secret_is_sent() {
    let ours = Coordinator::start(bin(), &[]);
    let theirs = Coordinator::start(bin(), &["--log-level", "debug"]);
    assert_ne!(ours.ca_hash, theirs.ca_hash);
    // A worker with our token pointed at another coordinator.
    let mut w =
        test_support::worker(bin(), &theirs.wss_url(), "w", &["--join", &ours.worker_token]);
    assert_eq!(w.wait(), Some(1), "it stops instead of retrying");
    assert!(w.log().contains("not issued by the pinned CA"), "{}", w.log());
    // The other coordinator saw a TLS handshake fail, and nothing after it:
    // no upgrade, no join, no registration.
    let log = theirs.proc.log();
    assert!(log.contains("handshake failed"), "{log}");
    assert!(!log.contains("joined") && !log.contains("peer registered"), "{log}");
    // The same for a client with the wrong --ca-hash.
    let out = std::process::Command::new(bin())
        .args(["task", "submit", "--coordinator", &theirs.wss_url(), "--ca-hash", &ours.ca_hash])
        .args(["--token", &token_secret(&theirs.client_token), "--type", "echo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pinned CA"));
}

#[tokio::test]
async fn a_revoked_worker_is_closed_at_once_and_kept_out() {
    let c = Coordinator::start(bin(), &[]);
    let (mut raw, credential) = joined_peer(&c, "w1").await;
    let revoked = api(&c, None).post("/cluster/workers/w1/revoke", &json!({})).await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(raw.until("error").await["code"], "revoked");
    assert_eq!(u16::from(raw.closed().await.expect("close").code), 1008);
    // The credential admits nobody now, over TLS or on loopback.
    let mut back = Raw::connect_with(&c.ws_url, None).await.unwrap();
    back.send_json(&json!({"msg_type": "register_peer", "peer_id": "w1", "capabilities": {},
                           "token": credential}))
        .await;
    // Even on loopback, where no credential is needed, a secret that is no
    // credential is refused (and closes the connection).
    let refused = back.expect("error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}\n{}", c.proc.log());
    assert_eq!(u16::from(back.closed().await.expect("close").code), 1008);
    // Without one the id is free again, registered as this machine's own.
    let mut local = Raw::connect_with(&c.ws_url, None).await.unwrap();
    local
        .send_json(&json!({"msg_type": "register_peer", "peer_id": "w1", "capabilities": {}}))
        .await;
    let ack = local.recv().await;
    assert_eq!(ack["status"], "registered", "{ack}\n{}", c.proc.log());
    local.close().await;
    // A revoked worker process stops with what to do about it.
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("w2.json");
    let args = ["--join", c.worker_token.as_str(), "--credential-file", cred.to_str().unwrap()];
    let mut w = test_support::worker(bin(), &c.wss_url(), "w2", &args);
    until_worker(&c, "w2").await;
    let out = std::process::Command::new(bin())
        .args(["worker", "revoke", "w2", "--api-url", c.http()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.wait(), Some(1));
    assert!(w.log().contains("delete the file"), "{}", w.log());
    // Revoking what is not there is a 404.
    let err = api(&c, None).post("/cluster/workers/nobody/revoke", &json!({})).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn tokens_rotate_without_a_restart() {
    let c = Coordinator::start(bin(), &[]);
    let (_w1, _) = joined_peer(&c, "w1").await;
    let out = std::process::Command::new(bin())
        .args(["cluster", "token", "rotate", "--kind", "worker", "--json", "--api-url", c.http()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_token = fresh["worker_token"].as_str().unwrap();
    assert_ne!(new_token, c.worker_token);
    assert_eq!(fresh["client_token"], c.client_token.as_str(), "only the worker token rotated");
    let dial = Dial { ca_hash: Some(&c.ca_hash), ..Dial::default() };
    let mut old = Raw::open(&c.wss_url(), dial.clone()).await.unwrap();
    let secret = token_secret(&c.worker_token);
    old.send_json(&json!({"msg_type": "join", "peer_id": "w2", "token": secret})).await;
    assert_eq!(old.expect("error").await["code"], "unauthorized");
    let mut new = Raw::open(&c.wss_url(), dial).await.unwrap();
    let secret = token_secret(new_token);
    new.send_json(&json!({"msg_type": "join", "peer_id": "w2", "token": secret})).await;
    new.expect("joined").await;
    // w1's own credential still works (its connection is up).
    assert_eq!(until_worker(&c, "w1").await["worker_id"], "w1");
}

#[tokio::test]
async fn a_session_id_belongs_to_the_credential_that_registered_it() {
    let keys = "alice-key-1:client,bob-key-12:client,admin-key-1:admin";
    let c = Coordinator::start(bin(), &["--api-keys", keys]);
    let gamer =
        |token: &str| json!({"msg_type": "register_gamer", "gamer_id": "g", "token": token});
    let mut alice = Raw::connect(&c.ws_url).await;
    alice.send_json(&gamer("alice-key-1")).await;
    alice.expect("registration_ack").await;
    // Bob may not take Alice's id; his connection stays open.
    let mut bob = Raw::connect(&c.ws_url).await;
    bob.send_json(&gamer("bob-key-12")).await;
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "id_taken", "{err}");
    bob.send_json(&json!({"msg_type": "register_gamer", "gamer_id": "b", "token": "bob-key-12"}))
        .await;
    bob.expect("registration_ack").await;
    // Alice may replace her own session (the old one is closed with 4000).
    let mut alice2 = Raw::connect(&c.ws_url).await;
    alice2.send_json(&gamer("alice-key-1")).await;
    alice2.expect("registration_ack").await;
    assert_eq!(u16::from(alice.closed().await.expect("close").code), 4000);
    // An admin may take any id over.
    let mut admin = Raw::connect(&c.ws_url).await;
    admin.send_json(&gamer("admin-key-1")).await;
    admin.expect("registration_ack").await;
    // A joined worker's id is its credential's: nobody else may use it.
    let (_w, _) = joined_peer(&c, "w1").await;
    let mut other = Raw::connect(&c.ws_url).await;
    other.send(r#"{"msg_type": "register_peer", "peer_id": "w1", "capabilities": {}}"#).await;
    assert_eq!(other.expect("error").await["code"], "id_taken");
}

/// The identity rule survives a restart: the gamer id of recovered tasks
/// stays bound to the credential that submitted them, so another credential
/// can neither take it nor name its tasks in `awaiting` to get their results.
#[tokio::test]
async fn a_gamer_id_stays_its_credentials_after_a_kill_9_and_restart() {
    let keys = "alice-key-1:client,bob-key-12:client";
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let register = |token: &str| {
        json!({"msg_type": "register_gamer", "gamer_id": "g", "token": token,
               "awaiting": ["secret"]})
    };
    let mut c = Coordinator::start(bin(), &["--api-keys", keys, "--data-dir", dir]);
    let mut alice = Raw::connect(&c.ws_url).await;
    let first = json!({"msg_type": "register_gamer", "gamer_id": "g", "token": "alice-key-1"});
    alice.send_json(&first).await;
    alice.expect("registration_ack").await;
    let task = json!({"msg_type": "task_request", "task_id": "secret",
                      "task_type": "nobody-runs-this", "data": {"n": 1}});
    alice.send_json(&task).await;
    alice.expect("task_accepted").await;
    c.proc.kill9();

    let c = Coordinator::start(bin(), &["--api-keys", keys, "--data-dir", dir]);
    let mut bob = Raw::connect(&c.ws_url).await;
    bob.send_json(&register("bob-key-12")).await;
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "id_taken", "{err}");
    let mut alice = Raw::connect(&c.ws_url).await;
    alice.send_json(&register("alice-key-1")).await;
    alice.expect("registration_ack").await;
}

#[tokio::test]
async fn a_wrong_bearer_header_is_401_even_with_approved_workers() {
    let c = Coordinator::start(bin(), &["--token", "cluster-secret"]);
    let admin = api(&c, Some("cluster-secret"));
    admin.post("/cluster/workers/register", &json!({"worker_id": "w9"})).await.unwrap();
    let refused = Raw::connect_with(&c.ws_url, Some("not-a-credential")).await.err().unwrap();
    assert_eq!(refused.status, 401);
    Raw::connect_with(&c.ws_url, Some("cluster-secret")).await.unwrap();
}

#[tokio::test]
async fn protocol_violations_close_with_rfc_6455_codes() {
    let c = Coordinator::start(bin(), &[]);
    // Frames from a client must be masked; a zero mask keeps the payload as is.
    let cases: [(&[u8], u16); 6] = [
        (&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe], 1007), // text, invalid UTF-8
        (&[0xc1, 0x82, 0, 0, 0, 0, b'h', b'i'], 1002), // RSV1 set
        (&[0x81, 0x02, b'h', b'i'], 1002),             // not masked
        // A close is answered (the closing handshake), with 1002 for a
        // code no endpoint may send.
        (&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8], 1000), // close 1000
        (&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe7], 1002), // close 999
        (&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xed], 1002), // close 1005
    ];
    for (frame, code) in cases {
        let mut raw = Raw::gamer(&c.ws_url, "g").await;
        raw.send_raw(frame).await;
        let close = raw.closed().await.expect("a close frame");
        assert_eq!(u16::from(close.code), code, "{frame:?}: {close:?}");
    }
}

#[tokio::test]
async fn trace_logs_carry_no_secrets() {
    let trace = ["--log-level", "trace"];
    let c = Coordinator::start(bin(), &trace);
    let dir = tempfile::tempdir().unwrap();
    let cred_file = dir.path().join("w.json");
    let args =
        ["--join", c.worker_token.as_str(), "--credential-file", cred_file.to_str().unwrap()];
    let mut w = test_support::worker(bin(), &c.wss_url(), "w", &[&args[..], &trace[..]].concat());
    until_worker(&c, "w").await;
    let out = std::process::Command::new(bin())
        .args(["--log-level", "trace", "task", "submit", "--coordinator", &c.wss_url()])
        .args(["--token", &c.client_token, "--type", "echo", "--data", "[1]", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    w.terminate();
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&cred_file).unwrap()).unwrap();
    let credential = kept["credential"].as_str().unwrap().to_owned();
    let secrets = [token_secret(&c.worker_token), token_secret(&c.client_token), credential];
    let logs = [c.proc.log(), w.log(), String::from_utf8_lossy(&out.stderr).into_owned()];
    assert!(logs[0].contains("TRACE"), "the coordinator logged at trace level");
    for (log, who) in logs.iter().zip(["coordinator", "worker", "client"]) {
        for secret in &secrets {
            assert!(!log.contains(secret.as_str()), "the {who}'s trace log holds a secret");
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 issued by it, as PEM files
/// (chain: server certificate, then the CA); returns the CA's pin.
pub(crate) fn operator_certificate(cert: &std::path::Path, key: &std::path::Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    std::fs::write(cert, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    tls::CaPin::of_certificate(ca_cert.der()).unwrap().to_string()
}

#[tokio::test]
async fn an_operator_certificate_is_served_and_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("fullchain.pem"), dir.path().join("privkey.pem"));
    let first = operator_certificate(&cert, &key);
    let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let c = Coordinator::start(bin(), &args);
    assert_eq!(c.ca_hash, first, "clients pin the last certificate of the chain");
    let pinned = |pin: String| {
        let url = c.wss_url();
        async move { Raw::open(&url, Dial { ca_hash: Some(&pin), ..Dial::default() }).await }
    };
    pinned(first.clone()).await.unwrap();
    // Renewed files, then SIGHUP: new connections get the new certificate.
    let second = operator_certificate(&cert, &key);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &c.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + WAIT;
    while pinned(second.clone()).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "not reloaded:\n{}", c.proc.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(pinned(first).await.is_err(), "the old certificate is gone");
    assert!(c.proc.log().contains("reloaded the TLS certificates"), "{}", c.proc.log());
}

/// Under systemd (stdout is the journal: `JOURNAL_STREAM` is set) the banner
/// shows no join token, and `LEGACYGPU_TLS_SAN` names the certificate's
/// extra addresses, as `--tls-san` does (the unit's environment file).
#[test]
fn a_systemd_banner_hides_tokens_and_takes_its_names_from_the_environment() {
    let data = tempfile::tempdir().unwrap();
    let args = ["cluster", "start", "--bind", "127.0.0.1:0", "--no-http"];
    let dir = data.path().to_str().unwrap();
    let envs = [("JOURNAL_STREAM", "8:12345"), ("LEGACYGPU_TLS_SAN", "coord.example")];
    let (mut proc, lines) =
        test_support::Proc::spawn(bin(), &[&args[..], &["--data-dir", dir]].concat(), &envs);
    let mut banner = Vec::new();
    loop {
        let line = lines.recv_timeout(WAIT).expect("the banner, up to `ready`");
        let done = line.starts_with("ready");
        banner.push(line);
        if done {
            break;
        }
    }
    let banner = banner.join("\n");
    assert!(banner.contains("certificate names:") && banner.contains("coord.example"), "{banner}");
    assert!(
        !banner.contains("lgj1-") && !banner.contains("lgc1-"),
        "a token in the journal: {banner}"
    );
    assert!(banner.contains("cluster token show"), "{banner}");
    proc.terminate();
}
