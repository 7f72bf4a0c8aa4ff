//! Quotas per client, decided in one place for both ports.
//!
//! A client is a gamer id (`gamer:ID`) and, when it proved itself with an
//! API key, that key too (`key:FINGERPRINT`); HTTP submissions count against
//! their owner (the key's, or `api` without one). For each client: unfinished tasks
//! (`max_queued_tasks_per_client`), their payload bytes
//! (`max_queued_bytes_per_client`) and submissions per second
//! (`max_submissions_per_s`, a token bucket with bursts of twice that); and
//! over everyone, the payload bytes of unfinished tasks (`max_queued_bytes`).
//! A submission past any of them is answered `busy` with a retry hint and
//! counted in `legacygpu_quota_refusals_total{limit}`; the bytes held show
//! in `legacygpu_queued_payload_bytes`.
//!
//! Unfinished tasks recovered at a restart are charged again to the clients
//! they were charged to when accepted (their owner, and the API key that
//! submitted them), so that a restart frees no one's quota.
//!
//! A gamer id is a client of its own: callers sharing one credential (the
//! cluster or client token, this machine) can spread their tasks over many
//! gamer ids, so a per-caller bound needs a credential per caller — an API
//! key, which is charged whatever gamer id it uses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proto::{ErrorCode, ErrorMsg, TaskAccepted, TaskRequest};
use sched::{Owner, TaskId, Time};

use crate::config::EdgeLimits;
use crate::core::{Core, messages};

#[derive(Debug, Default)]
struct Usage {
    tasks: usize,
    bytes: usize,
    tokens: f64,
    at: Option<Time>,
}

/// What every client holds now.
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    total_bytes: usize,
    clients: HashMap<String, Usage>,
    /// Each unfinished task charged: its clients and bytes.
    tasks: HashMap<TaskId, (Vec<String>, usize)>,
    /// The gauge is behind.
    dirty: bool,
}

/// A refusal: which limit, why, and when to retry.
#[derive(Debug)]
struct Over {
    limit: &'static str,
    reason: String,
    retry_after_s: f64,
}

impl Quotas {
    /// Checks `bytes` more for `clients` against `limits`; takes a rate
    /// token from each when all pass.
    fn check(
        &mut self,
        limits: &EdgeLimits,
        clients: &[String],
        bytes: usize,
        now: Time,
    ) -> Result<(), Over> {
        let busy =
            |limit, reason: String, retry_after_s: f64| Err(Over { limit, reason, retry_after_s });
        if self.total_bytes.saturating_add(bytes) > limits.max_queued_bytes {
            let reason = format!(
                "the coordinator holds {} bytes of queued task data (limit {}); retry later",
                self.total_bytes, limits.max_queued_bytes
            );
            return busy("queued_bytes", reason, 1.0);
        }
        let rate = f64::from(limits.max_submissions_per_s);
        if self.clients.len() > 10_000 + 2 * self.tasks.len() {
            // Idle clients' buckets go: at worst they get a fresh burst.
            self.clients.retain(|_, u| u.tasks > 0);
        }
        for key in clients {
            let u = self.clients.entry(key.clone()).or_default();
            if u.tasks >= limits.max_queued_tasks_per_client {
                let reason = format!("{key} has {} unfinished tasks (limit); retry later", u.tasks);
                return busy("client_tasks", reason, 1.0);
            }
            if u.bytes.saturating_add(bytes) > limits.max_queued_bytes_per_client {
                let reason = format!(
                    "{key} has {} bytes of queued task data (limit {}); retry later",
                    u.bytes, limits.max_queued_bytes_per_client
                );
                return busy("client_bytes", reason, 1.0);
            }
            if rate > 0.0 {
                refill(u, rate, now);
                if u.tokens < 1.0 {
                    let reason = format!("{key} is over {rate} submissions per second");
                    return busy("client_rate", reason, (1.0 - u.tokens) / rate);
                }
            }
        }
        if rate > 0.0 {
            for key in clients {
                if let Some(u) = self.clients.get_mut(key) {
                    u.tokens -= 1.0;
                }
            }
        }
        Ok(())
    }

    fn charge(&mut self, task: TaskId, clients: Vec<String>, bytes: usize) {
        self.total_bytes += bytes;
        for key in &clients {
            let u = self.clients.entry(key.clone()).or_default();
            u.tasks += 1;
            u.bytes += bytes;
        }
        self.tasks.insert(task, (clients, bytes));
    }

    /// Charges the unfinished tasks recovered at start, as [`accept`] did
    /// when they were submitted.
    pub fn charge_recovered(&mut self, tasks: &[sched::Recovered<proto::Json>]) {
        for r in tasks {
            if matches!(r.state, sched::RecoveredState::Finished { .. }) {
                continue;
            }
            let key = r.spec.submitter.as_deref().and_then(|s| s.strip_prefix("api-key:"));
            let clients = clients(&r.spec.owner, key);
            self.charge(r.spec.id, clients, r.spec.payload.get().len());
        }
        self.dirty = true;
    }

    /// A task ended: what it held is free.
    pub fn finished(&mut self, task: TaskId) {
        let Some((clients, bytes)) = self.tasks.remove(&task) else { return };
        self.dirty = true;
        self.total_bytes -= bytes;
        for key in clients {
            if let Some(u) = self.clients.get_mut(&key) {
                u.tasks -= 1;
                u.bytes -= bytes;
                if u.tasks == 0 && u.at.is_none() {
                    self.clients.remove(&key);
                }
            }
        }
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }
}

/// Tops up a client's bucket (bursts of twice the rate).
fn refill(u: &mut Usage, rate: f64, now: Time) {
    let burst = 2.0 * rate;
    u.tokens = match u.at {
        None => burst,
        Some(at) => {
            let dt = Duration::from_micros(now.as_micros().saturating_sub(at.as_micros()));
            (u.tokens + dt.as_secs_f64() * rate).min(burst)
        }
    };
    u.at = Some(now);
}

/// Submits `req` for `owner` within the quotas of `clients`: the
/// acknowledgement, or the error that refused it (see `messages::accept`).
pub(crate) fn accept(
    core: &mut Core,
    clients: Vec<String>,
    owner: Owner,
    submitter: Option<Arc<str>>,
    req: TaskRequest,
) -> Result<TaskAccepted, ErrorMsg> {
    let bytes = req.data.get().len();
    let now = core.now();
    let limits = &core.config.edge;
    let client_id = req.task_id.clone();
    if let Err(over) = core.quotas.check(limits, &clients, bytes, now) {
        let limit = over.limit;
        crate::telemetry::quota_refused(&core.telemetry.recorder(), limit);
        let mut err = ErrorMsg::new(ErrorCode::BUSY, over.reason).in_reply_to("task_request");
        err.retry_after_s = Some(over.retry_after_s);
        return Err(match client_id {
            Some(id) => err.task(id),
            None => err,
        });
    }
    let accepted = messages::accept(core, owner, submitter, req)?;
    if !accepted.existing
        && let Ok(id) = accepted.id.parse()
    {
        core.quotas.charge(id, clients, bytes);
        core.quotas.dirty = true;
        publish(core);
    }
    Ok(accepted)
}

/// The clients a gamer's submission on `conn` counts against.
pub(crate) fn clients_of(core: &Core, conn: sched::ConnId, owner: &Owner) -> Vec<String> {
    let key = match core.conns.get(&conn).map(|c| &c.principal) {
        Some(crate::credentials::Principal::ApiKey { fingerprint, .. }) => Some(&**fingerprint),
        _ => None,
    };
    clients(owner, key)
}

/// The clients a task of `owner` counts against: its owner (`gamer:ID`,
/// `key:FINGERPRINT`, `api`), and for a gamer's task the API key
/// (`fingerprint`) it was submitted with, if any. The one rule for new
/// submissions on both ports and for tasks recovered at a restart.
pub(crate) fn clients(owner: &Owner, fingerprint: Option<&str>) -> Vec<String> {
    let mut clients = vec![owner.to_string()];
    if let (Owner::Gamer(_), Some(fp)) = (owner, fingerprint) {
        clients.push(Owner::Key(Arc::from(fp)).to_string());
    }
    clients
}

/// The bytes held, as a gauge (after changes only).
pub(crate) fn publish(core: &mut Core) {
    if !std::mem::take(&mut core.quotas.dirty) {
        return;
    }
    let held = core.quotas.total_bytes() as f64;
    crate::telemetry::queued_payload_bytes(&core.telemetry.recorder(), held);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits() -> EdgeLimits {
        EdgeLimits {
            max_queued_bytes: 1000,
            max_queued_bytes_per_client: 400,
            max_queued_tasks_per_client: 3,
            max_submissions_per_s: 10,
            ..EdgeLimits::default()
        }
    }

    #[test]
    fn each_limit_refuses_and_finishing_frees() {
        let mut q = Quotas::default();
        let l = limits();
        let t0 = Time::from_secs(1);
        let a = vec!["gamer:a".to_owned()];
        let b = vec!["gamer:b".to_owned(), "key:1".to_owned()];
        q.check(&l, &a, 300, t0).unwrap();
        q.charge(TaskId(1), a.clone(), 300);
        assert_eq!(q.check(&l, &a, 200, t0).err().unwrap().limit, "client_bytes");
        for i in 2..4 {
            q.check(&l, &b, 100, t0).unwrap();
            q.charge(TaskId(i), b.clone(), 100);
        }
        q.check(&l, &b, 100, t0).unwrap();
        q.charge(TaskId(4), b.clone(), 100);
        assert_eq!(q.check(&l, &b, 1, t0).err().unwrap().limit, "client_tasks");
        q.finished(TaskId(2));
        q.check(&l, &b, 1, t0).unwrap();
        // Everyone's bytes together.
        let c = vec!["gamer:c".to_owned()];
        q.check(&l, &c, 390, t0).unwrap();
        q.charge(TaskId(5), c.clone(), 390);
        let d = vec!["gamer:d".to_owned()];
        assert_eq!(q.check(&l, &d, 200, t0).err().unwrap().limit, "queued_bytes");
        for t in 1..=5 {
            q.finished(TaskId(t));
        }
        assert_eq!(q.total_bytes(), 0);
    }

    #[test]
    fn submissions_are_rate_limited_per_client() {
        let mut q = Quotas::default();
        let l = EdgeLimits { max_submissions_per_s: 10, ..EdgeLimits::default() };
        let a = vec!["gamer:a".to_owned()];
        let t0 = Time::from_secs(1);
        for _ in 0..20 {
            q.check(&l, &a, 1, t0).unwrap();
        }
        let over = q.check(&l, &a, 1, t0).err().unwrap();
        assert_eq!(over.limit, "client_rate");
        assert!(over.retry_after_s > 0.0);
        q.check(&l, &["gamer:b".to_owned()], 1, t0).unwrap();
        q.check(&l, &a, 1, t0 + Duration::from_millis(150)).unwrap();
    }
}
