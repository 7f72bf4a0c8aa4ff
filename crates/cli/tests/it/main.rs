//! Integration tests: the real `legacygpu` binary on 127.0.0.1, ephemeral
//! ports, raw WebSocket clients sending the seed's literal JSON, real
//! `kill -9`. One test binary (modules below) so the binary links once.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod auth;
mod bad_input;
mod bench;
mod cli;
mod crash;
mod dashboard;
mod executors;
mod failover;
mod generate;
mod ha;
mod lifecycle;
mod limits;
mod openai;
mod python_client;
mod security;
mod seed;
mod verify;

use std::path::Path;

/// The binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_legacygpu"))
}

/// Coordinator flags that make the detection of a silent peer fast, for the
/// tests of that alone (a killed process closes its socket and is noticed at
/// once without them): a loaded machine can starve a busy worker's
/// heartbeats for a second, so tests of anything else keep the defaults.
pub const FAST: &[&str] = &["--heartbeat-timeout", "1", "--heartbeat-interval", "0.2"];
