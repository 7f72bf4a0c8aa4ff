//! `legacygpu monitor`: a live terminal view fed by the event stream, with
//! the worker table and totals refreshed from the REST API.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use api_types::{Health, WorkerInfo, WorkerList};
use client::api::Api;
use codes::WorkerStatus;
use futures_util::StreamExt;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Row, Sparkline, Table};
use ratatui::{DefaultTerminal, Frame};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::args::Monitor;
use crate::remote::{api, cell};

/// Events kept on screen.
const RECENT: usize = 200;
/// Seconds of throughput history.
const HISTORY: usize = 120;

enum Update {
    Snapshot { health: Box<Health>, workers: Vec<WorkerInfo> },
    Event(Value),
    Problem(String),
}

#[derive(Default)]
struct View {
    base: String,
    /// None until the first answer.
    health: Option<Box<Health>>,
    workers: Vec<WorkerInfo>,
    recent: VecDeque<String>,
    /// Tasks finished per second, oldest first; the last entry is this second.
    per_second: VecDeque<u64>,
    second: Option<Instant>,
    problem: Option<String>,
    events_seen: u64,
}

pub async fn run(args: Monitor) -> anyhow::Result<ExitCode> {
    if args.remote.json {
        return Err(crate::remote::usage(
            "monitor draws a live view; for JSON, ask `cluster status --json`",
        ));
    }
    let mut remote = args.remote.clone();
    if let Some(coordinator) = &args.coordinator {
        remote.api_url = Some(api_of(coordinator)?);
    }
    let api = api(&remote).await?;
    // Fail early, before taking over the terminal, when the API is unreachable.
    api.get("/cluster/health").await?;
    let (tx, mut rx) = mpsc::channel(4096);
    let poller =
        tokio::spawn(poll(api.clone(), Duration::from_secs_f64(args.interval), tx.clone()));
    let stream = tokio::spawn(follow(api.clone(), tx));
    let mut view = View { base: api.base().to_owned(), ..View::default() };
    view.per_second.push_back(0);
    view.second = Some(Instant::now());
    let mut terminal = ratatui::init();
    let result = ui(&mut terminal, &mut view, &mut rx);
    ratatui::restore();
    poller.abort();
    stream.abort();
    result?;
    Ok(ExitCode::SUCCESS)
}

fn ui(
    terminal: &mut DefaultTerminal,
    view: &mut View,
    rx: &mut mpsc::Receiver<Update>,
) -> anyhow::Result<()> {
    loop {
        while let Ok(update) = rx.try_recv() {
            view.apply(update);
        }
        view.tick();
        terminal.draw(|f| draw(f, view))?;
        let key = tokio::task::block_in_place(|| -> anyhow::Result<Option<event::KeyEvent>> {
            if event::poll(Duration::from_millis(100))?
                && let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
            {
                return Ok(Some(k));
            }
            Ok(None)
        })?;
        if let Some(k) = key {
            let ctrl_c =
                k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
            if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                return Ok(());
            }
        }
    }
}

impl View {
    fn apply(&mut self, update: Update) {
        match update {
            Update::Snapshot { health, workers } => {
                self.health = Some(health);
                self.workers = workers;
                self.problem = None;
            }
            Update::Problem(p) => self.problem = Some(p),
            Update::Event(e) => {
                let kind = e["event"].as_str().unwrap_or("?").to_owned();
                if kind == "cluster_stats" {
                    return;
                }
                self.events_seen += 1;
                if matches!(kind.as_str(), "task_completed" | "task_failed" | "task_cancelled") {
                    self.tick();
                    if let Some(last) = self.per_second.back_mut() {
                        *last += 1;
                    }
                }
                let subject = [&e["task_id"], &e["worker_id"]]
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(|v| cell(v))
                    .collect::<Vec<_>>()
                    .join(" on ");
                let detail = ["task_type", "reason", "code", "status"]
                    .iter()
                    .filter(|k| !e[**k].is_null())
                    .map(|k| cell(&e[*k]))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.recent.push_front(format!("{kind:<15} {subject} {detail}"));
                self.recent.truncate(RECENT);
            }
        }
    }

    /// Moves the throughput history on to the current second.
    fn tick(&mut self) {
        let Some(mut start) = self.second else { return };
        while start.elapsed() >= Duration::from_secs(1) {
            start += Duration::from_secs(1);
            self.per_second.push_back(0);
            if self.per_second.len() > HISTORY {
                self.per_second.pop_front();
            }
        }
        self.second = Some(start);
    }
}

fn draw(f: &mut Frame, v: &View) {
    let [top, middle, bottom, help] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(8),
        Constraint::Percentage(40),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let h = v.health.as_deref();
    let status = h.map_or("…", |h| h.status.as_str());
    let colour = match status {
        "HEALTHY" => Color::Green,
        "DEGRADED" => Color::Yellow,
        _ => Color::Red,
    };
    let rate: u64 = v.per_second.iter().rev().skip(1).take(60).sum();
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!(" {status} "), Style::new().fg(Color::Black).bg(colour)),
            Span::raw(match h {
                Some(h) => format!(
                    "  workers {}/{} healthy   queue {}   running {}   completed {}   failed {}   {rate} tasks/min",
                    h.healthy_workers,
                    h.total_workers,
                    h.pending_tasks,
                    h.running_tasks,
                    h.completed_tasks,
                    h.failed_tasks,
                ),
                None => "  waiting for the first answer".to_owned(),
            }),
        ]),
        Line::raw(format!(
            " avg latency {} ms   up {:.0} s   events seen {}",
            h.and_then(|h| h.average_task_latency_ms)
                .map_or("-".to_owned(), |ms| format!("{ms:.2}")),
            h.map_or(0.0, |h| h.uptime_seconds),
            v.events_seen
        )),
    ];
    if let Some(p) = &v.problem {
        lines.push(Line::styled(format!(" {p}"), Style::new().fg(Color::Red)));
    }
    let title = format!(" legacygpu monitor — {} ", v.base);
    f.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(title)),
        top,
    );
    let [workers_area, spark_area] =
        Layout::horizontal([Constraint::Percentage(65), Constraint::Percentage(35)]).areas(middle);
    f.render_widget(workers_table(&v.workers), workers_area);
    let data: Vec<u64> = v.per_second.iter().copied().collect();
    let spark = Sparkline::default()
        .block(Block::new().borders(Borders::ALL).title(" tasks finished per second "))
        .data(&data)
        .style(Style::new().fg(Color::Cyan));
    f.render_widget(spark, spark_area);
    let items: Vec<ListItem> = v.recent.iter().map(|e| ListItem::new(e.as_str())).collect();
    f.render_widget(
        List::new(items).block(Block::new().borders(Borders::ALL).title(" recent events ")),
        bottom,
    );
    f.render_widget(Paragraph::new(" q: quit"), help);
}

/// The workers, one row each, status in colour.
fn workers_table(workers: &[WorkerInfo]) -> Table<'_> {
    let rows = workers.iter().map(|w| {
        let style = match w.status {
            WorkerStatus::Healthy => Style::new().fg(Color::Green),
            WorkerStatus::Draining | WorkerStatus::Paused => Style::new().fg(Color::Yellow),
            _ => Style::new().fg(Color::Red),
        };
        Row::new(vec![
            Span::raw(w.worker_id.clone()),
            Span::styled(w.status.as_str(), style),
            Span::raw(format!("{}/{}", w.busy_slots, w.slots)),
            Span::raw(format!("{:.0}%", w.current_load * 100.0)),
            Span::raw(w.tasks_completed.to_string()),
            Span::raw(format!("{:.1}s", w.last_heartbeat_seconds_ago)),
        ])
    });
    let widths = [
        Constraint::Percentage(30),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(10),
    ];
    let header = Row::new(["worker", "status", "busy", "load", "done", "heartbeat"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    Table::new(rows, widths)
        .header(header)
        .block(Block::new().borders(Borders::ALL).title(format!(" workers ({}) ", workers.len())))
}

/// The HTTP API beside a coordinator's protocol address (`--coordinator`):
/// the same host, port 8000, https:// when the address is wss:// (or
/// another machine's `tcp://`).
fn api_of(coordinator: &str) -> anyhow::Result<String> {
    let url = crate::args::seed_urls(coordinator);
    let first = url.split(',').next().unwrap_or_default();
    let (scheme, rest) = match first.split_once("://") {
        Some(("ws", rest)) => ("http", rest),
        Some(("wss", rest)) => ("https", rest),
        _ => anyhow::bail!(
            "`{coordinator}` is not a coordinator address (tcp://, ws:// or wss://HOST:PORT)"
        ),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => authority,
    };
    Ok(format!("{scheme}://{host}:8000"))
}

/// Health and workers, every `interval`.
async fn poll(api: Api, interval: Duration, tx: mpsc::Sender<Update>) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let answers = tokio::try_join!(
            api.get_as::<Health>("/cluster/health"),
            api.get_as::<WorkerList>("/cluster/workers")
        );
        let update = match answers {
            Ok((health, list)) => {
                Update::Snapshot { health: Box::new(health), workers: list.workers }
            }
            Err(e) => Update::Problem(e.to_string()),
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

/// The event stream, reconnecting when it drops.
async fn follow(api: Api, tx: mpsc::Sender<Update>) {
    loop {
        let result = async {
            let mut req = api.events_url("").into_client_request()?;
            if let Some(k) = api.key() {
                req.headers_mut().insert("authorization", format!("Bearer {k}").parse()?);
            }
            let connector = api.tls_config().map(tokio_tungstenite::Connector::Rustls);
            let (mut ws, _) =
                tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector)
                    .await?;
            while let Some(frame) = ws.next().await {
                if let Message::Text(t) = frame?
                    && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                    && tx.send(Update::Event(v)).await.is_err()
                {
                    return Ok(());
                }
            }
            anyhow::Ok(())
        }
        .await;
        if tx.is_closed() {
            return;
        }
        let why = result
            .err()
            .map_or_else(|| "the event stream closed".to_owned(), |e| format!("event stream: {e}"));
        let _ = tx.send(Update::Problem(format!("{why}; reconnecting"))).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_beside_the_coordinators_address() {
        assert_eq!(api_of("tcp://localhost:5555").unwrap(), "http://localhost:8000");
        assert_eq!(api_of("ws://127.0.0.1:8765").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(api_of("wss://10.0.0.2:8765/").unwrap(), "https://10.0.0.2:8000");
        assert_eq!(api_of("tcp://10.0.0.2:5555").unwrap(), "https://10.0.0.2:8000");
        assert_eq!(api_of("wss://[::1]:8765").unwrap(), "https://[::1]:8000");
        assert!(api_of("http://x:1").is_err());
    }
}
