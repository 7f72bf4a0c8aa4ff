//! Peers that answer by themselves — honestly, or lying at a chosen rate —
//! for tests of verification. A raw WebSocket peer speaking the protocol,
//! never a hook in the product.
//!
//! Honest answers are a pure function of the task ([`honest`]), so that two
//! honest peers agree as real ones do: `gpu` matmuls are computed for real
//! (Freivalds' check is real maths); `physics` and `inference` answers are
//! stand-ins shaped like the executors' (a checksum over the scene, labels
//! picked from the image), since what is tested is the comparison, not
//! rapier or tract. A lie changes what the comparison looks at: a physics
//! checksum, one element of a matrix product, the top label.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// When a peer lies.
#[derive(Debug, Clone)]
pub struct Lies {
    /// The chance of a lie, per assignment, 0–1.
    pub rate: f64,
    /// Only tasks of these types (any type when empty).
    pub only_types: Vec<String>,
    /// Seeds the peer's draws, so that a test is the same every run.
    pub seed: u64,
}

impl Lies {
    /// An honest peer.
    pub fn never() -> Lies {
        Lies { rate: 0.0, only_types: Vec::new(), seed: 0 }
    }

    /// Lies at `rate` on every type.
    pub fn at(rate: f64, seed: u64) -> Lies {
        Lies { rate, only_types: Vec::new(), seed }
    }
}

/// What a running peer did, so far.
#[derive(Debug, Default)]
pub struct Tally {
    pub answered: AtomicU64,
    pub lied: AtomicU64,
}

/// A peer running in the background; dropping it disconnects the peer.
pub struct Peer {
    pub id: String,
    pub tally: Arc<Tally>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects a peer `id` to `url` with `capabilities` (a JSON object) and
/// answers every assignment, lying as `lies` says. Returns once registered.
pub async fn spawn(url: &str, id: &str, capabilities: Value, lies: Lies) -> Peer {
    let mut raw = crate::Raw::peer(url, id, &capabilities.to_string()).await;
    let tally = Arc::new(Tally::default());
    let counts = Arc::clone(&tally);
    let peer_id = id.to_owned();
    let task = tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(lies.seed);
        let mut beat = tokio::time::interval(Duration::from_secs(2));
        loop {
            let frame = tokio::select! {
                frame = raw.ws.next() => frame,
                _ = beat.tick() => {
                    let hb = json!({"msg_type": "heartbeat", "peer_id": peer_id});
                    if raw.ws.send(Message::text(hb.to_string())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(Ok(Message::Text(text))) = frame else {
                if matches!(frame, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                    return;
                }
                continue;
            };
            let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) else { continue };
            if msg["msg_type"] != "task_assignment" {
                continue;
            }
            let task_type = msg["task_type"].as_str().unwrap_or_default().to_owned();
            let mut answer = honest(&task_type, &msg["task_data"]);
            let liable = lies.only_types.is_empty() || lies.only_types.contains(&task_type);
            if liable && rng.f64() < lies.rate {
                answer = lie(&task_type, answer, &mut rng);
                counts.lied.fetch_add(1, Ordering::Relaxed);
            }
            counts.answered.fetch_add(1, Ordering::Relaxed);
            let reply = json!({
                "msg_type": "task_result",
                "task_id": msg["task_id"],
                "id": msg["id"],
                "attempt": msg["attempt"],
                "result": answer,
            });
            if raw.ws.send(Message::text(reply.to_string())).await.is_err() {
                return;
            }
        }
    });
    Peer { id: id.to_owned(), tally, task }
}

/// The answer an honest peer gives.
pub fn honest(task_type: &str, data: &Value) -> Value {
    match task_type {
        "physics" => json!({"bodies": [], "steps": data["steps"], "checksum": checksum(data)}),
        "gpu" => matmul(data),
        "inference" => {
            let h = fnv(data.to_string().as_bytes());
            let labels = ["red", "green", "blue", "bright", "dark"];
            let first = (h % 5) as usize;
            let second = (first + 1 + (h >> 8) as usize % 4) % 5;
            json!({"model": data["model"], "top_k": [
                {"label": labels[first], "index": first, "score": 0.75},
                {"label": labels[second], "index": second, "score": 0.2}]})
        }
        _ => data.clone(),
    }
}

/// A wrong answer in place of `answer`, as a broken card or a cheat makes it.
pub fn lie(task_type: &str, mut answer: Value, rng: &mut fastrand::Rng) -> Value {
    match task_type {
        "physics" => {
            let sum = answer["checksum"].as_str().unwrap_or_default().to_owned();
            answer["checksum"] = json!(format!("{:016x}", fnv(sum.as_bytes()) ^ rng.u64(1..)));
        }
        "gpu" if answer["c"].is_array() => {
            let n = answer["c"].as_array().map_or(0, Vec::len);
            let at = rng.usize(..n.max(1));
            let v = answer["c"][at].as_f64().unwrap_or(0.0);
            answer["c"][at] = json!(v + 0.5 + rng.f64());
        }
        "inference" => {
            answer["top_k"][0]["label"] = json!("liar's label");
        }
        _ => answer = json!({"lie": rng.u64(..)}),
    }
    answer
}

fn checksum(data: &Value) -> String {
    format!("{:016x}", fnv(data.to_string().as_bytes()))
}

/// FNV-1a: a stand-in for the executor's xxh3 over the bodies.
fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// A real matrix product, shaped as the gpu executor returns it.
fn matmul(data: &Value) -> Value {
    let dim = |k: &str| data[k].as_u64().unwrap_or(0) as usize;
    let (m, k, n) = (dim("m"), dim("k"), dim("n"));
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).map(|x| x as f32).collect())
            .unwrap_or_default()
    };
    let (a, b) = match data["seed"].as_u64() {
        Some(seed) => (
            agree::matmul::generate(seed, m * k),
            agree::matmul::generate(seed.wrapping_add(1), k * n),
        ),
        None => (floats(&data["a"]), floats(&data["b"])),
    };
    if a.len() != m * k || b.len() != k * n {
        return json!({"error": "bad input"});
    }
    let c = agree::matmul::multiply(&a, &b, (m, k, n));
    let sum: f64 = c.iter().map(|&x| f64::from(x)).sum();
    let l2 = c.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    json!({"op": "matmul", "device": "cpu", "m": m, "k": k, "n": n, "c": c, "sum": sum, "l2": l2})
}
