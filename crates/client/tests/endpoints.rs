//! The SDK given several coordinator URLs, against stand-ins on
//! `127.0.0.1`: one that never answers (a frozen coordinator: the kernel
//! accepts the connection, nobody reads), and fake coordinators that
//! acknowledge a gamer's registration.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use client::{Client, ClientOptions};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Every wait of these tests ends by then.
const WAIT: Duration = Duration::from_secs(30);

const ACK: &str = r#"{"msg_type": "registration_ack", "status": "registered"}"#;

/// A listening socket nobody accepts from: connections complete and are
/// never answered.
fn silent() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    (l, url)
}

/// A fake coordinator: it acknowledges every registration (reporting the
/// connection's number on the channel), then keeps reading (answering
/// pings).
async fn fake() -> (String, mpsc::UnboundedReceiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            n += 1;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let first = ws.next().await;
                assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");
                ws.send(Message::text(ACK)).await.unwrap();
                let _ = tx.send(n);
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (url, rx)
}

/// A fake coordinator that acknowledges one registration, then freezes:
/// it stops reading that connection (no pong, nothing) and never answers
/// another one.
async fn freezing() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        // Held open, never read again.
        let (mut frozen, mut unanswered) = (Vec::new(), Vec::new());
        while let Ok((tcp, _)) = listener.accept().await {
            if count.fetch_add(1, Ordering::SeqCst) > 0 {
                unanswered.push(tcp);
                continue;
            }
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let _ = ws.next().await;
            ws.send(Message::text(ACK)).await.unwrap();
            frozen.push(ws);
        }
    });
    (url, accepted)
}

/// A URL that never answers, first in the list, costs one connect timeout,
/// not the whole search: the next URL is tried and connected.
#[tokio::test]
async fn a_url_that_never_answers_leaves_time_for_the_next() {
    let (_frozen, frozen_url) = silent();
    let (good_url, mut registered) = fake().await;
    let options =
        ClientOptions { connect_timeout: Duration::from_millis(500), ..ClientOptions::default() };
    let list = format!("{frozen_url},{good_url}");
    let connected = tokio::time::timeout(WAIT, Client::connect(&list, options)).await;
    let client = connected.expect("connected in time").expect("the second URL answers");
    assert_eq!(tokio::time::timeout(WAIT, registered.recv()).await.unwrap(), Some(1));
    drop(client);
}

/// Given one URL that never answers, connecting fails after its timeout.
#[tokio::test]
async fn a_lone_url_that_never_answers_fails_in_time() {
    let (_frozen, frozen_url) = silent();
    let options =
        ClientOptions { connect_timeout: Duration::from_millis(200), ..ClientOptions::default() };
    let connected = tokio::time::timeout(WAIT, Client::connect(&frozen_url, options)).await;
    let Err(e) = connected.expect("gave up in time") else { panic!("nothing answered") };
    assert!(e.to_string().contains("timed out"), "{e}");
}

/// The coordinator the client is connected to goes silent (frozen): the
/// client gives it up after `silence_timeout` and goes to the next URL
/// first, instead of waiting a connect timeout on the frozen one again.
#[tokio::test]
async fn a_coordinator_gone_silent_is_left_for_the_next_url_first() {
    let (frozen_url, frozen_accepted) = freezing().await;
    let (good_url, mut registered) = fake().await;
    let options = ClientOptions {
        silence_timeout: Some(Duration::from_millis(300)),
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let list = format!("{frozen_url},{good_url}");
    let client = tokio::time::timeout(WAIT, Client::connect(&list, options)).await.unwrap();
    let client = client.expect("the first URL answers once");
    assert_eq!(frozen_accepted.load(Ordering::SeqCst), 1);
    assert_eq!(tokio::time::timeout(WAIT, registered.recv()).await.unwrap(), Some(1));
    assert_eq!(
        frozen_accepted.load(Ordering::SeqCst),
        1,
        "the frozen one was not tried again first"
    );
    drop(client);
}
