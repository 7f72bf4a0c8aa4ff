//! The task list (filtered, paged, with bulk actions) and one task's page,
//! both read from the store.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use sched::{TaskId, TaskState};
use serde::Deserialize;

use super::pages::urlencode;
use super::{PagePath, PageQuery, Viewer, may, page, page_error};
use crate::config::ApiRole;
use crate::core::ApiRequest;
use crate::http::Api;
use crate::http::tasks::{confined_owner, store_filter};

/// Rows per page.
const PAGE: u32 = 50;
/// How much of a task's input or result a page shows.
const SHOWN_BYTES: usize = 16 * 1024;

/// The list's query: the filters, and the keyset cursor.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    pub status: Option<String>,
    pub task_type: Option<String>,
    pub worker_id: Option<String>,
    pub owner: Option<String>,
    /// `YYYY-MM-DDTHH:MM` (a datetime-local input, UTC) or Unix ms.
    pub from: Option<String>,
    pub to: Option<String>,
    pub before: Option<String>,
}

/// A time filter: Unix ms, or a `datetime-local` value read as UTC.
pub(super) fn parse_time(s: Option<&str>) -> Result<Option<i64>, String> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(None) };
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Some(ms));
    }
    let bad = || format!("`{s}` is not a time (YYYY-MM-DDTHH:MM, UTC, or Unix ms)");
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let num = |t: &str| t.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    let ([y, m, day], [hh, mm, ..]) = (d.as_slice(), t.as_slice()) else { return Err(bad()) };
    let (y, m, day, hh, mm) = (num(y)?, num(m)?, num(day)?, num(hh)?, num(mm)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 {
        return Err(bad());
    }
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(Some(((days * 24 + hh) * 60 + mm) * 60_000))
}

/// A Unix-ms time as `YYYY-MM-DD HH:MM:SS` UTC.
pub(super) fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The store filter of a list query, confined to the viewer's own tasks
/// when it is a client.
pub(super) fn filter_of(viewer: &Viewer, q: &ListQuery) -> Result<store::TaskFilter, String> {
    let from = parse_time(q.from.as_deref())?;
    let to = parse_time(q.to.as_deref())?;
    let detail = |e: crate::http::ApiError| e.body.detail;
    let owner = confined_owner(&viewer.caller(), q.owner.clone()).map_err(detail)?;
    store_filter(q.status.as_deref(), q.task_type.clone(), q.worker_id.clone(), owner, from, to)
        .map_err(detail)
}

/// `/tasks`: the tasks the filters select, newest first, 50 a page.
pub(super) async fn list(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<ListQuery>,
) -> Response {
    let filter = match filter_of(&viewer, &q) {
        Ok(f) => f,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, "Bad filter", &e),
    };
    let before = q.before.as_deref().and_then(|b| b.parse::<TaskId>().ok()).map(|t| t.0);
    let page_of = store::Page { before, limit: PAGE, skip: 0 };
    let read = api.read(move |r| Ok((r.tasks(&filter, page_of)?, r.count(&filter)?))).await;
    let (rows, total) = match read {
        Ok(v) => v,
        Err(_) => {
            return page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                "The task store could not be read.",
            );
        }
    };
    let next = (rows.len() == PAGE as usize).then(|| rows.last().map(|t| t.task.id)).flatten();
    let body = render_list(&viewer, &q, &rows, total, next);
    page(
        &headers,
        Some(&viewer),
        "Tasks",
        "task_queued task_assigned task_started task_completed task_failed task_cancelled task_retried",
        body,
    )
}

fn render_list(
    viewer: &Viewer,
    q: &ListQuery,
    rows: &[store::StoredTask],
    total: u64,
    next: Option<u64>,
) -> Markup {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let query = serde_urlencoded_query(q);
    html! {
        h1 { "Tasks" }
        form #task-filter method="get" action="/tasks" {
            label { "status " select name="status" {
                option value="" { "any" }
                @for s in TaskState::ALL { option value=(s.as_str()) selected[q.status.as_deref() == Some(s.as_str())] { (s.as_str()) } }
            } }
            label { "type " input name="task_type" value=(text(&q.task_type)) size="10"; }
            label { "worker " input name="worker_id" value=(text(&q.worker_id)) size="10"; }
            label { "owner " input name="owner" value=(text(&q.owner)) size="10" placeholder="api, gamer:ID"; }
            label { "from " input type="datetime-local" name="from" value=(text(&q.from)); }
            label { "to " input type="datetime-local" name="to" value=(text(&q.to)); }
            button type="submit" { "Filter" }
        }
        p #task-total { (total) " matching" }
        @if may(viewer, ApiRole::Admin) && total > 0 {
            form.bulk method="post" action="/ui/tasks/bulk" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="query" value=(query);
                "Everything this filter matches: "
                button type="submit" name="action" value="cancel" { "Cancel all…" }
                button type="submit" name="action" value="retry" { "Retry all…" }
                span.muted { " (the next page shows the count and asks to confirm)" }
            }
        }
        table #tasks {
            thead { tr { th { "id" } th { "type" } th { "status" } th { "owner" } th { "worker" } th { "attempt" } th { "submitted (UTC)" } } }
            tbody {
                @for t in rows {
                    @let id = TaskId(t.task.id).to_string();
                    tr.task data-task=(id) {
                        td { a href=(format!("/tasks/{id}")) { (id) } }
                        td { (t.task.task_type) }
                        td { span class=(format!("status {}", t.state.as_str())) { (t.state.as_str()) } }
                        td { (t.task.owner) }
                        td { (t.peer.as_deref().unwrap_or("")) }
                        td { (t.attempt) }
                        td { (fmt_time(t.task.submitted_at_ms)) }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a #next-page href=(format!("/tasks?{query}&before=t-{next}")) { "Older →" } }
        }
    }
}

/// The list query as a URL query, without the cursor.
fn serde_urlencoded_query(q: &ListQuery) -> String {
    let pairs = [
        ("status", &q.status),
        ("task_type", &q.task_type),
        ("worker_id", &q.worker_id),
        ("owner", &q.owner),
        ("from", &q.from),
        ("to", &q.to),
    ];
    pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_deref().filter(|v| !v.is_empty()).map(|v| format!("{k}={}", urlencode(v)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `/tasks/{id}`: its input, result or error, attempts as a timeline, and
/// cancel / retry.
pub(super) async fn task(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    PagePath(id): PagePath<String>,
) -> Response {
    let Ok(task) = id.parse::<TaskId>() else {
        return page_error(StatusCode::NOT_FOUND, "No such task", "Task ids look like t-42.");
    };
    // The scheduler first, then the store once it holds what the scheduler
    // knew: the stored state and its result are then at least as new as the
    // live view, and the page shows the two from one read (an event that
    // sent the page here names a change the store may not have held yet).
    let live = api.request(|reply| ApiRequest::Task { task, reply }).await.ok().flatten();
    if let Some(now) = &live {
        let _ = api.durable(now.seq).await;
    }
    let stored = match api.read(move |r| r.task(task.0)).await {
        Ok(Some(t)) if t.task.owner.parse().is_ok_and(|o| viewer.caller().may_touch(&o)) => t,
        Ok(_) => {
            return page_error(
                StatusCode::NOT_FOUND,
                "No such task",
                &format!("No task `{id}` is stored (unknown, or past its result TTL)."),
            );
        }
        Err(_) => {
            return page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                "The task store could not be read.",
            );
        }
    };
    let body = render_task(&viewer, &stored, live.as_ref());
    page(
        &headers,
        Some(&viewer),
        &id,
        "task_assigned task_started task_completed task_failed task_cancelled task_retried",
        body,
    )
}

/// `GET /ui/tasks/{id}/stream` (client, as the REST stream): the task's
/// progress as server-sent events, which the task page shows as it comes.
pub(super) async fn stream(
    State(api): State<Api>,
    Extension(viewer): Extension<Viewer>,
    PagePath(id): PagePath<String>,
) -> Response {
    if !may(&viewer, ApiRole::Client) {
        return page_error(StatusCode::FORBIDDEN, "Not allowed", "This needs the client role.");
    }
    match crate::http::sse::stream(
        State(api),
        Extension(viewer.caller()),
        crate::http::extract::Id(id),
    )
    .await
    {
        Ok(events) => events,
        Err(e) => e.into_response(),
    }
}

fn capped(text: &str) -> (String, bool) {
    if text.len() <= SHOWN_BYTES {
        return (text.to_owned(), false);
    }
    let mut end = SHOWN_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_owned())
}

fn render_task(
    viewer: &Viewer,
    t: &store::StoredTask,
    live: Option<&crate::core::requests::TaskNow>,
) -> Markup {
    let id = TaskId(t.task.id).to_string();
    let state = t.state;
    // The live view adds what only the scheduler knows (why it waits), while
    // it describes the state the store holds.
    let live = live.filter(|l| l.status == state);
    let (input, input_cut) = capped(&pretty(&t.task.payload));
    let result = t.result.as_deref().map(|r| capped(&pretty(r)));
    let text = t
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|v| v.get("text").and_then(|x| x.as_str()).map(str::to_owned));
    let can_cancel = !state.is_terminal() && may(viewer, ApiRole::Client);
    // A generation still running streams its tokens into the page.
    let streams =
        t.task.task_type == "generate" && !state.is_terminal() && may(viewer, ApiRole::Client);
    let can_retry = matches!(state, TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut)
        && may(viewer, ApiRole::Client);
    html! {
        h1 { "Task " (id) }
        p { "status: " span #task-status class=(format!("status {}", state.as_str())) { (state.as_str()) }
            " · type " (t.task.task_type) " · owner " (t.task.owner) " · client id " (t.task.client_task_id)
            " · submitted " (fmt_time(t.task.submitted_at_ms)) " UTC" }
        @if let Some(reason) = live.and_then(|l| l.waiting_reason.as_deref()) { p.muted #waiting { "waiting: " (reason) } }
        div.actions {
            @for (action, shown) in [("cancel", can_cancel), ("retry", can_retry)] {
                @if shown {
                    form.inline method="post" action=(format!("/ui/tasks/{id}/{action}")) {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button #(format!("task-{action}")) type="submit" { (action) }
                    }
                }
            }
        }
        h2 { "Attempts" }
        (timeline(t))
        (verification(t, state))
        @if let Some(e) = &t.error { h2 { "Error" } p.error #task-error { (e.code) ": " (e.message) } }
        @if streams {
            h2 { "Generated text (as it streams)" }
            pre #task-stream data-stream=(format!("/ui/tasks/{id}/stream")) {}
            noscript { p.muted { "The text appears here as it is generated when JavaScript is on; reload for the result." } }
        }
        @if let Some(text) = text { h2 { "Generated text" } pre #task-text { (text) } }
        @if let Some((r, cut)) = result { h2 { "Result" } pre #task-result { (r) } @if cut { p.muted { "(shortened)" } } }
        h2 { "Input" }
        pre #task-input { (input) }
        @if input_cut { p.muted { "(shortened to 16 KiB)" } }
    }
}

/// A verified task's policy, verdict and replicas (docs/VERIFICATION.md);
/// nothing for a task that is not verified.
fn verification(t: &store::StoredTask, state: TaskState) -> Markup {
    let Some(v) = crate::http::trust::stored_verification_view(t) else {
        return html! {
            @if let Some(policy) = t.task.verify.as_deref().filter(|_| !state.is_terminal()) {
                h2 { "Verification" }
                p #verification { "policy " code { (policy) } " · " span.status { "pending" } }
            }
        };
    };
    html! {
        h2 { "Verification" }
        p #verification { "policy " code { (v.policy) } " · " span.status { (v.status.as_str()) } }
        table #replicas {
            thead { tr { th { "replica" } th { "worker" } th { "attempts" } th { "verdict" } th { "result or error" } } }
            tbody {
                @for r in &v.replicas {
                    @let outcome = r.result.as_ref().map(ToString::to_string).or_else(|| r.error.clone());
                    tr {
                        td { (r.task_id) } td { (r.worker_id.as_deref().unwrap_or("")) } td { (r.attempts) }
                        td class=(format!("verdict {}", r.verdict.as_str())) { (r.verdict.as_str()) }
                        td { code { (capped(&outcome.unwrap_or_default()).0) } }
                    }
                }
            }
        }
    }
}

/// Every attempt as a bar on one time axis, with its worker and how it ended.
fn timeline(t: &store::StoredTask) -> Markup {
    let start = t.task.submitted_at_ms;
    let end = t
        .attempts
        .iter()
        .filter_map(|a| a.ended_at_ms)
        .chain(t.finished_at_ms)
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let span = (end - start) as f64;
    let pct = |ms: i64| ((ms - start) as f64 / span * 100.0).clamp(0.0, 100.0);
    html! {
        @if t.attempts.is_empty() { p.muted { "Not assigned yet." } }
        table #attempts {
            tbody {
                @for a in &t.attempts {
                    @let (from, to) = (pct(a.assigned_at_ms), pct(a.ended_at_ms.unwrap_or(end)));
                    tr {
                        td { "#" (a.attempt) } td { (a.peer) }
                        td { (a.end.map_or("running", |e| e.as_str())) }
                        td { (fmt_time(a.assigned_at_ms)) " → " (a.ended_at_ms.map(fmt_time).unwrap_or_default()) }
                        td.bar { svg viewBox="0 0 100 6" preserveAspectRatio="none" width="240" height="10" {
                            rect x=(format!("{from:.2}")) y="0" width=(format!("{:.2}", (to - from).max(0.5))) height="6" class=(a.end.map_or("running", |e| e.as_str())) {}
                        } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_print_as_utc() {
        assert_eq!(parse_time(Some("2026-12-01T12:30")), Ok(Some(1_796_128_200_000)));
        assert_eq!(fmt_time(1_796_128_200_000), "2026-12-01 12:30:00");
        assert_eq!(parse_time(Some("1700000000000")), Ok(Some(1_700_000_000_000)));
        assert_eq!(parse_time(Some(" ")), Ok(None));
        assert!(parse_time(Some("yesterday")).is_err());
        assert!(parse_time(Some("2026-13-01T00:00")).is_err());
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(SHOWN_BYTES);
        let (cut, was) = capped(&long);
        assert!(was && cut.len() <= SHOWN_BYTES && cut.chars().all(|c| c == 'é'));
        assert_eq!(capped("short"), ("short".to_owned(), false));
    }
}
