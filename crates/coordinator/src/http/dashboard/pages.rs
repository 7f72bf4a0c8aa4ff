//! The overview, workers, events and submit pages (from the snapshot).

use std::collections::BTreeSet;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use codes::WorkerStatus;
use maud::{Markup, html};

use super::{Viewer, may, page};
use crate::config::ApiRole;
use crate::hour::Tally;
use crate::http::Api;
use crate::http::workers::worker_info;

/// `/`: the cluster at a glance.
pub(super) async fn overview(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    let (snap, now) = (api.snapshot(), api.now());
    let interval = api.config.heartbeat_interval;
    let healthy =
        snap.workers.iter().filter(|w| w.status(now, interval) == WorkerStatus::Healthy).count();
    let (s, f) = (&snap.stats, &snap.figures);
    // What the store holds (history across restarts), by state.
    let stored = api.read(|r| r.counts()).await.ok();
    let stored_in = |state: &str| {
        stored.as_ref().map(|c| c.iter().filter(|c| c.state == state).map(|c| c.tasks).sum::<u64>())
    };
    let ok = healthy > 0 || snap.workers.is_empty();
    // On PostgreSQL: this coordinator's place in the lease (a standby
    // redirects its pages to the leader, so what is seen is the leader's).
    let lease = api.ha().map(|v| v.status.borrow().clone());
    let body = html! {
        h1 { "Overview" }
        section.cards {
            (card("Health", "health", if ok { "ok" } else { "degraded" }))
            (card("Workers healthy / total", "workers", &format!("{healthy} / {}", snap.workers.len())))
            (card("Queue depth", "queued", &s.queued.to_string()))
            (card("Running", "running", &(s.assigned + s.running).to_string()))
            (card("Completed", "completed", &f.completed.to_string()))
            (card("Failed", "failed", &f.failed.to_string()))
            (card("Tasks/min", "per-minute", &f.tasks_per_minute.to_string()))
        }
        @if let Some(l) = &lease {
            p #coordinator {
                "Coordinator: " strong { (l.role.as_str()) } " at epoch " (l.epoch)
                @if let Some(age) = l.lease_age() { ", lease renewed " (format!("{:.1}", age.as_secs_f64())) " s ago" }
                @if let Some(leader) = &l.leader { "; leader " (leader.http.as_deref().unwrap_or(&leader.ws)) }
                ". Other coordinators on the same database stand by (docs/SCALING.md)."
            }
            h2 { "Coordinators" }
            table #coordinators {
                thead { tr { th { "coordinator" } th { "role" } th { "epoch" } th { "WebSocket" } th { "HTTP" } th { "up" } th { "last report" } } }
                tbody {
                    @for c in l.coordinators() {
                        tr data-role=(c.role) {
                            td { (c.holder) @if c.this { " (this one)" } }
                            td { (c.role) }
                            td { (c.epoch) }
                            td { (c.ws) }
                            td { @match &c.http { Some(h) => a href=(h) { (h) }, None => "—" } }
                            td { (format!("{:.0} s", c.up.as_secs_f64())) }
                            td { (format!("{:.1} s ago", c.seen.as_secs_f64())) }
                        }
                    }
                }
            }
        }
        p.muted {
            "Since this coordinator started. In the store (history, within the result TTL): "
            span #stored-completed { (stored_in("completed").map_or("?".into(), |n| n.to_string())) } " completed, "
            span #stored-failed { (stored_in("failed").map_or("?".into(), |n| n.to_string())) } " failed."
        }
        h2 { "Tasks per second, last hour" }
        (chart(&f.hour.per_minute))
        h2 { "Latency (submission to outcome)" }
        @match f.hour.latency_ms {
            Some([p50, p95, p99]) => p #latency {
                "p50 " (fmt_ms(p50)) " · p95 " (fmt_ms(p95)) " · p99 " (fmt_ms(p99))
            },
            None => p.muted #latency { "No task has finished yet." },
        }
        div.split {
            div { h2 { "By task type" } (tally_table("type", f.hour.by_type.iter())) }
            div { h2 { "By model" } (tally_table("model", f.hour.by_model.iter())) }
        }
        @if may(&viewer, ApiRole::Client) { p { a href="/submit" { "Submit a task →" } } }
    };
    page(
        &headers,
        Some(&viewer),
        "Overview",
        "worker_joined worker_left worker_dead worker_status task_completed task_failed task_queued cluster_stats",
        body,
    )
}

/// A worker's results as found: valid, invalid, unverified.
fn verdicts(valid: u64, invalid: u64, unverified: u64) -> Markup {
    html! { span title="valid / invalid / unverified results" { (valid) " ✓ · " (invalid) " ✗ · " (unverified) " ?" } }
}

fn card(label: &str, id: &str, value: &str) -> Markup {
    html! { div.card { div.label { (label) } div.value id=(id) { (value) } } }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 { format!("{:.2} s", ms / 1e3) } else { format!("{ms:.1} ms") }
}

fn tally_table<'a>(
    what: &str,
    rows: impl Iterator<Item = (&'a std::sync::Arc<str>, &'a Tally)>,
) -> Markup {
    html! {
        table {
            thead { tr { th { (what) } th { "completed" } th { "failed" } } }
            tbody {
                @for (name, t) in rows {
                    tr { td { (name) } td { (t.completed) } td { (t.failed) } }
                }
            }
        }
    }
}

/// An inline SVG bar chart of tasks/s per minute (oldest left).
fn chart(per_minute: &[u64]) -> Markup {
    let (w, h) = (600.0_f64, 120.0_f64);
    let peak = per_minute.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bar = w / per_minute.len().max(1) as f64;
    let title = format!("peak {:.2} tasks/s", peak / 60.0);
    html! {
        svg #chart viewBox=(format!("0 0 {w} {h}")) width="100%" height="120" role="img" aria-label=(title) {
            title { (title) }
            @for (i, n) in per_minute.iter().enumerate() {
                @let bh = (*n as f64 / peak) * (h - 10.0);
                rect x=(format!("{:.1}", i as f64 * bar)) y=(format!("{:.1}", h - bh)) width=(format!("{:.1}", (bar - 1.0).max(1.0))) height=(format!("{bh:.1}")) {
                    title { (format!("{:.2} tasks/s, {} min ago", *n as f64 / 60.0, per_minute.len() - 1 - i)) }
                }
            }
            line x1="0" y1=(h) x2=(w) y2=(h) class="axis" {}
        }
    }
}

/// `/workers`: every connected worker, its trust (results found valid,
/// invalid, unverified; a quarantine), with the owner's controls (`clear`
/// lifts a quarantine).
/// The buttons a worker's row offers: revoke only where there is a
/// credential to revoke, clear only for a quarantined worker.
fn worker_actions(quarantined: bool, approved: bool) -> impl Iterator<Item = &'static str> {
    ["drain", "pause", "resume"]
        .into_iter()
        .chain(approved.then_some("revoke"))
        .chain(quarantined.then_some("clear"))
}

pub(super) async fn workers(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    let (snap, now) = (api.snapshot(), api.now());
    let interval = api.config.heartbeat_interval;
    let admin = may(&viewer, ApiRole::Admin);
    let body = html! {
        h1 { "Workers" }
        p.muted { (snap.workers.len()) " connected" }
        table #workers {
            thead { tr {
                th { "id" } th { "status" } th { "address" } th { "task types" } th { "models" }
                th { "GPUs" } th { "slots" } th { "heartbeat" } th { "done / failed" } th { "GPU use" } th { "trust" }
                @if admin { th { "actions" } }
            } }
            tbody {
                @for w in &snap.workers {
                    @let info = worker_info(w, now, interval);
                    @let caps = proto::Capabilities::from_value(serde_json::Value::clone(&w.capabilities));
                    tr.worker data-worker=(info.worker_id) {
                        td { (info.worker_id) }
                        td { span class=(format!("status {}", info.status.as_str())) { (status_name(info.status)) } }
                        td { (info.address.as_deref().unwrap_or("")) }
                        td { (info.task_types.as_ref().map_or("all".to_owned(), |t| t.join(", "))) }
                        td { (info.models.join(", ")) }
                        td { @for g in &caps.gpus { div { (g.name) @if let Some(v) = g.vram_mb { " · " (v) " MiB" } } } }
                        td { (info.busy_slots) " / " (info.slots) }
                        td { (format!("{:.0} s ago", info.last_heartbeat_seconds_ago)) }
                        td { (info.tasks_completed) " / " (info.tasks_failed) }
                        td {
                            @for g in &info.gpus {
                                div.gpu {
                                    (g.card) ": "
                                    @if let Some(b) = g.busy_percent { (format!("{b:.0}% busy")) }
                                    @if let Some(u) = g.vram_used_mb { " · " (u) @if let Some(t) = g.vram_total_mb { " / " (t) } " MiB VRAM" }
                                }
                            }
                        }
                        td.trust {
                                @if let Some(r) = &info.reputation {
                                    (verdicts(r.valid, r.invalid, r.unverified))
                                    @if r.canaries_passed + r.canaries_failed > 0 {
                                        div.muted { "canaries " (r.canaries_passed) " / " (r.canaries_passed + r.canaries_failed) }
                                    }
                                }
                        }
                        @if admin {
                            td.actions {
                                @let quarantined = info.status == WorkerStatus::Quarantined;
                                @let approved = api.credentials.approvals.is_approved(&info.worker_id);
                                @for action in worker_actions(quarantined, approved) {
                                    form.inline method="post" action=(format!("/ui/workers/{}/{action}", urlencode(&info.worker_id))) {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button type="submit" name="do" value=(action) data-action=(action) { (action) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !snap.quarantined_away.is_empty() {
            h2 { "Quarantined, not connected" }
            p.muted { "Their results were found wrong too often; the quarantine stays, across restarts, until it is cleared." }
            table #away {
                thead { tr { th { "id" } th { "trust" } th { "strikes" } @if admin { th { "actions" } } } }
                tbody {
                    @for (id, r) in &snap.quarantined_away {
                        tr.away data-away-worker=(id) {
                            td { (id) }
                            td.trust { (verdicts(r.valid, r.invalid, r.unverified)) }
                            td { (r.strikes) }
                            @if admin {
                                td.actions {
                                    form.inline method="post" action=(format!("/ui/workers/{}/clear", urlencode(id.as_str()))) {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button type="submit" name="do" value="clear" data-action="clear" { "clear" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        &headers,
        Some(&viewer),
        "Workers",
        "worker_joined worker_left worker_dead worker_status task_assigned task_completed task_failed cluster_stats",
        body,
    )
}

/// How the dashboard names a status (`unhealthy` is shown as late).
pub(super) fn status_name(s: WorkerStatus) -> &'static str {
    match s {
        WorkerStatus::Unhealthy => "late",
        other => other.as_str(),
    }
}

/// A path segment, percent-encoded.
pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/events`: the live stream (the script fills it), with a kind filter.
pub(super) async fn events(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    let kinds = crate::telemetry::ApiEvent::KINDS;
    // What the page shows before (and without) the live stream: the latest
    // step of the newest tasks, from the store (the stream itself keeps no
    // history). A client key sees its own tasks only.
    let owner = viewer.caller().confined_to().map(ToString::to_string);
    let filter = store::TaskFilter { owner, ..store::TaskFilter::default() };
    let page_of = store::Page { before: None, limit: RECENT_EVENTS, skip: 0 };
    let rows = api.read(move |r| r.tasks(&filter, page_of)).await.unwrap_or_default();
    let mut recent: Vec<StoredStep> = rows.iter().map(latest_step).collect();
    recent.sort_by_key(|s| std::cmp::Reverse(s.at_ms));
    let body = html! {
        h1 { "Events" }
        noscript { p.muted { "Without JavaScript this page shows the latest step of the newest tasks, from the store; reload for newer ones. The live stream is /ws/cluster/events (with an API key)." } }
        form #event-filter {
            @for k in kinds { label.check { input type="checkbox" name="kind" value=(k) checked; (k) } }
            label { " task id " input name="task_id" placeholder="t-42"; }
        }
        table #events {
            thead { tr { th { "time" } th { "kind" } th { "task" } th { "worker" } th { "event" } } }
            tbody {
                @for s in &recent {
                    tr class=(format!("stored {}", s.kind)) {
                        td { (super::tasks::fmt_time(s.at_ms)) }
                        td { (s.kind) }
                        td { a href=(format!("/tasks/{}", s.task_id)) { (s.task_id) } }
                        td { (s.worker.as_deref().unwrap_or("")) }
                        td.muted { (s.task_type) " · from the store" }
                    }
                }
            }
        }
    };
    page(&headers, Some(&viewer), "Events", "", body)
}

/// Tasks the events page shows from the store.
const RECENT_EVENTS: u32 = 50;

/// A stored task's latest step, as the event it was.
struct StoredStep {
    at_ms: i64,
    kind: &'static str,
    task_id: String,
    task_type: String,
    worker: Option<String>,
}

fn latest_step(t: &store::StoredTask) -> StoredStep {
    use codes::TaskState as S;
    let last = t.attempts.last();
    let (kind, at) = match t.state {
        S::Queued => ("task_queued", None),
        S::Assigned => ("task_assigned", last.map(|a| a.assigned_at_ms)),
        S::Running => ("task_started", t.started_at_ms),
        S::Completed => ("task_completed", t.finished_at_ms),
        S::Cancelled => ("task_cancelled", t.finished_at_ms),
        S::Failed | S::TimedOut => ("task_failed", t.finished_at_ms),
    };
    StoredStep {
        at_ms: at.unwrap_or(t.task.submitted_at_ms),
        kind,
        task_id: sched::TaskId(t.task.id).to_string(),
        task_type: t.task.task_type.clone(),
        worker: t.peer.clone().or_else(|| last.map(|a| a.peer.clone())),
    }
}

/// `/submit`: a task form, and a generation form when the pool serves LLM
/// models (offered types and models are the pool's).
pub(super) async fn submit(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    let snap = api.snapshot();
    let mut types: BTreeSet<String> = api.config.task_needs.keys().cloned().collect();
    let mut models = BTreeSet::new();
    let mut llm = BTreeSet::new();
    // What the pool offers: the workers given new work.
    for w in snap.workers.iter().filter(|w| w.takes_work()) {
        types.extend(w.task_types.iter().flatten().cloned());
        models.extend(w.models.iter().cloned());
        llm.extend(w.generation_models().map(|m| m.name.clone()));
    }
    let allowed = may(&viewer, ApiRole::Client);
    let body = html! {
        h1 { "Submit" }
        @if !allowed { p.error { "Your key is read-only: it cannot submit tasks." } }
        @else {
            form #submit-form method="post" action="/ui/submit" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label { "Task type " select #task_type name="task_type" {
                    @for t in &types { option value=(t) { (t) } }
                } }
                label { "Model " select name="model" { option value="" { "(none)" } @for m in &models { option value=(m) { (m) } } } }
                label.wide { "Input (JSON object) " textarea #data name="data" rows="6" { "{}" } }
                label { "Priority " select name="priority" { @for p in ["LOW", "NORMAL", "HIGH", "CRITICAL"] { option value=(p) selected[p == "NORMAL"] { (p) } } } }
                button #submit type="submit" { "Submit" }
            }
            @if !llm.is_empty() {
                h2 { "Generate text" }
                form #generate-form method="post" action="/ui/submit" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    input type="hidden" name="task_type" value="generate";
                    label { "Model " select name="model" { @for m in &llm { option value=(m) { (m) } } } }
                    label.wide { "Prompt " textarea name="prompt" rows="4" {} }
                    label { "Max tokens " input type="number" name="max_tokens" value="128" min="1" max="4096"; }
                    button type="submit" { "Generate" }
                }
            }
        }
    };
    page(&headers, Some(&viewer), "Submit", "", body)
}
