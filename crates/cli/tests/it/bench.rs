//! `legacygpu bench` works in each mode (a short, bounded smoke run; the
//! figures themselves live in BENCHMARKS.md, not in tests).

use serde_json::Value;

use crate::bin;

fn bench(args: &[&str]) -> Value {
    let out = std::process::Command::new(bin())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("run legacygpu bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn throughput_mode_runs_every_task_once() {
    let r = bench(&["--tasks", "3000", "--duration", "60", "--in-flight", "64"]);
    assert_eq!(
        (r["mode"].as_str(), r["completed"].as_u64(), r["errors"].as_u64()),
        (Some("throughput"), Some(3000), Some(0))
    );
    assert!(r["store"].as_str().unwrap().starts_with("sqlite"), "{r}");
    assert_eq!(r["latency_ms"]["samples"], 3000);
    assert!(r["coordinator"]["peak_rss_mb"].as_f64().unwrap() > 0.0, "{r}");
}

#[test]
fn latency_mode_offers_a_fixed_rate_and_peers_can_be_processes() {
    let r = bench(&["--rate", "400", "--duration", "1", "--no-store", "--peer-processes"]);
    assert_eq!((r["mode"].as_str(), r["errors"].as_u64()), (Some("latency"), Some(0)));
    assert_eq!(r["store"], "memory");
    let done = r["completed"].as_u64().unwrap();
    assert!(done > 0 && done <= 400, "{r}");
}

#[test]
fn scale_mode_holds_idle_peers() {
    let r = bench(&[
        "--idle-peers",
        "300",
        "--duration",
        "1",
        "--heartbeat-interval",
        "0.5",
        "--source-ips",
        "3",
    ]);
    assert_eq!((r["mode"].as_str(), r["idle_peers"].as_u64()), (Some("scale"), Some(300)));
    assert!(r["latency_ms"]["samples"].as_u64().unwrap() > 0, "{r}");
}
