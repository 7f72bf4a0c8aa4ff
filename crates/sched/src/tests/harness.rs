//! A tiny script language to drive the scheduler, and [`check`], which runs a
//! script and compares what the scheduler did with an expectation.
//!
//! Each script line is one input:
//!
//! ```text
//! at 16s                          # move time to 16 s and fire due timers
//! join p1 slots=2 types=echo,sleep models=m gpu=8192 running=t-1#1
//! join p1 models=m,color:inference,tiny:generate   (a model for every type, or for one)
//! leave p1 | hb p1 | drain p1
//! pause p1 | resume p1 | odrain p1      (an operator's pause, resume, drain)
//! retry t-1                             (an operator's retry)
//! gamer g1 | gamer-left g1 | awaiting g1 t-1,t-2
//! submit g1 echo id=123 prio=2 key=k model=m gpu vram=4000 timeout=5s qtimeout=9s attempts=2
//! submit api echo ...
//! result p1 t-1 ok=R | err=code | err=code:retry | returned   (optionally #attempt after the id)
//! start p1 t-1 | progress p1 t-1
//! submit g1 generate stream            (the submitter wants progress)
//! cancel g1 t-1 | cancel api t-1
//! submit g1 echo verify=2/2 | verify=2/2/adaptive     (a verified task)
//! join p1 owner=alice cred=c1                          (a declared owner, a credential)
//! clear p1                                             (lift a quarantine)
//! ```
//!
//! Scripts judge results with [`Rules`]: type `selfcheck` is checked on its
//! own (results starting with `ok` pass), `sampled` cannot be verified,
//! every other type is replicated and compared for equality; canaries of
//! type `gen` are made with payload and answer `canary`.
//!
//! The log shows, per input, what the handler returned (`=>`) and every
//! command it produced; events are shown only by [`check_events`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::verify::{Agreement, Canary, Policy, Rule};
use crate::{
    Attempt, Command, Config, ConnId, Event, Failure, GamerId, Outcome, Owner, PeerCaps, PeerId,
    PeerJoin, Requirements, RunOutcome, Scheduler, Submission, TaskId, Time,
};

/// The agreement rules of scripts (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules;

impl Agreement<String> for Rules {
    fn rule(&self, task_type: &str, _: &String) -> Rule {
        match task_type {
            "selfcheck" => Rule::SelfCheck,
            "sampled" => Rule::Unverifiable,
            _ => Rule::Replicate,
        }
    }

    fn agree(&self, _: &str, _: &String, a: &String, b: &String) -> bool {
        a == b
    }

    fn check(&self, _: &str, _: &String, result: &String) -> bool {
        result.starts_with("ok")
    }

    fn canary(&self, task_type: &str, _like: &String, _seed: u64) -> Option<Canary<String>> {
        (task_type == "gen")
            .then(|| Canary { payload: "canary".to_owned(), expected: "canary".to_owned() })
    }
}

pub type Sched = Scheduler<String>;

/// A scheduler with connection bookkeeping for scripts.
pub struct World {
    pub sched: Sched,
    pub now: Time,
    next_conn: u64,
    pub peer_conns: BTreeMap<String, ConnId>,
    pub gamer_conns: BTreeMap<String, ConnId>,
    pub log: String,
    pub show_events: bool,
}

impl World {
    pub fn new(config: Config) -> World {
        let mut sched = Scheduler::new(config, Time::ZERO);
        sched.set_agreement(Box::new(Rules));
        World {
            sched,
            now: Time::ZERO,
            next_conn: 0,
            peer_conns: BTreeMap::new(),
            gamer_conns: BTreeMap::new(),
            log: String::new(),
            show_events: false,
        }
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub fn run(&mut self, script: &str) {
        for line in script.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            writeln!(self.log, "{line}").unwrap();
            self.step(line);
            self.drain();
        }
    }

    fn step(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let opts: BTreeMap<&str, &str> = words.iter().filter_map(|w| w.split_once('=')).collect();
        let flag = |name: &str| words.contains(&name);
        let now = self.now;
        match words[0] {
            "at" => {
                self.now = Time::from_micros(duration(words[1]).as_micros() as u64);
                self.sched.handle_timeout(self.now);
            }
            "join" => {
                let conn = self.conn();
                self.peer_conns.insert(words[1].to_owned(), conn);
                let join = PeerJoin {
                    id: PeerId::from(words[1]),
                    conn,
                    caps: caps(&opts),
                    running: opts.get("running").map(|r| claims(r)).unwrap_or_default(),
                    owner: opts.get("owner").map(|o| Arc::from(*o)),
                    credential: opts.get("cred").map(|c| Arc::from(*c)),
                };
                let joined = self.sched.handle_peer_joined(now, join);
                if joined.replaced || !joined.stale.is_empty() {
                    self.ret(format!("{joined:?}"));
                }
            }
            "leave" => {
                let conn = self.peer_conns[words[1]];
                self.sched.handle_peer_left(now, &PeerId::from(words[1]), conn);
            }
            "hb" => {
                let conn = self.peer_conns.get(words[1]).copied().unwrap_or(ConnId(999));
                let r = self.sched.handle_heartbeat(now, &PeerId::from(words[1]), conn);
                if r.is_err() {
                    self.ret(format!("{r:?}"));
                }
            }
            "drain" => {
                let conn = self.peer_conns[words[1]];
                self.sched.handle_drain(now, &PeerId::from(words[1]), conn).unwrap();
            }
            "retry" => {
                let id: TaskId = words[1].parse().unwrap();
                if let Err(e) = self.sched.handle_retry(now, id) {
                    self.ret(format!("{e:?}"));
                }
            }
            "pause" | "resume" | "odrain" => {
                let peer = PeerId::from(words[1]);
                let r = match words[0] {
                    "pause" => self.sched.handle_pause(now, &peer),
                    "resume" => self.sched.handle_resume(now, &peer),
                    _ => self.sched.handle_operator_drain(now, &peer),
                };
                if let Err(e) = r {
                    self.ret(format!("{e:?}"));
                }
            }
            "gamer" => {
                let conn = self.conn();
                self.gamer_conns.insert(words[1].to_owned(), conn);
                self.sched.handle_gamer_joined(now, GamerId::from(words[1]), conn);
            }
            "awaiting" => {
                let conn = self.gamer_conns[words[1]];
                let ids: Vec<TaskId> = words[2].split(',').map(|t| task_ref(t).0).collect();
                let unknown = self.sched.handle_awaiting(now, &GamerId::from(words[1]), conn, &ids);
                if !unknown.is_empty() {
                    let ids: Vec<String> = unknown.iter().map(ToString::to_string).collect();
                    self.ret(format!("unknown {}", ids.join(",")));
                }
            }
            "undelivered" => {
                // Named by gamer (its connection now) or by connection (`c3`).
                let conn = match words[2].strip_prefix('c').and_then(|n| n.parse().ok()) {
                    Some(n) => ConnId(n),
                    None => self.gamer_conns[words[2]],
                };
                self.sched.handle_undelivered(now, task_ref(words[1]).0, conn);
            }
            "gamer-left" => {
                let conn = self.gamer_conns[words[1]];
                self.sched.handle_gamer_left(now, &GamerId::from(words[1]), conn);
            }
            "submit" => {
                let sub = submission(&words, &opts, flag("gpu"));
                let r = self.sched.handle_submit(now, sub);
                self.ret(match r {
                    Ok(a) => {
                        let why = a.waiting_reason.map(|w| format!(" ({w})")).unwrap_or_default();
                        let existing = if a.existing { " existing" } else { "" };
                        format!("{} {}{existing} {:?}{why}", a.id, a.client_task_id, a.status)
                    }
                    Err(e) => format!("{e:?}"),
                });
            }
            "result" => self.result(&words, &opts),
            "progress" => {
                let (id, attempt) = self.peer_ref(words[2]);
                let conn = self.peer_conns[words[1]];
                let r = self.sched.handle_progress(now, &PeerId::from(words[1]), conn, id, attempt);
                // What the shell does when the gamer got it.
                if let Ok(crate::Progress::Forward { task, attempt, gamer_conn: Some(_) }) = &r {
                    self.sched.handle_progress_delivered(task.id, *attempt);
                }
                self.ret(match r {
                    Ok(crate::Progress::Forward { task, attempt, gamer_conn }) => {
                        let to = gamer_conn.map_or("nobody".to_owned(), |c| c.to_string());
                        format!("forward {}{attempt} to {to}", task.id)
                    }
                    Ok(other) => format!("{other:?}"),
                    Err(e) => format!("{e:?}"),
                });
            }
            "start" => {
                let (id, attempt) = self.peer_ref(words[2]);
                let conn = self.peer_conns[words[1]];
                let r = self.sched.handle_started(now, &PeerId::from(words[1]), conn, id, attempt);
                if r.is_err() {
                    self.ret(format!("{r:?}"));
                }
            }
            "clear" => {
                let r = self.sched.handle_clear(now, &PeerId::from(words[1]));
                self.ret(format!("{r:?}"));
            }
            "cancel" => {
                let owner = owner(words[1]);
                let r = self.sched.handle_cancel(now, &owner, task_ref(words[2]).0);
                self.ret(format!("{r:?}"));
            }
            other => panic!("unknown script word {other}"),
        }
    }

    /// A task as a peer names it: its peer id (`123`) or its cluster id (`t-1`).
    fn peer_ref(&self, text: &str) -> (TaskId, Option<Attempt>) {
        let (id, attempt) = text.split_once('#').map_or((text, None), |(id, a)| (id, Some(a)));
        let id = self.sched.resolve_peer_task(id).unwrap_or_else(|| panic!("no task `{id}`"));
        (id, attempt.map(|a| Attempt(a.parse().unwrap())))
    }

    fn result(&mut self, words: &[&str], opts: &BTreeMap<&str, &str>) {
        let (id, attempt) = self.peer_ref(words[2]);
        let outcome = if let Some(r) = opts.get("ok") {
            RunOutcome::Completed((*r).to_owned())
        } else if let Some(e) = opts.get("err") {
            let (code, retryable) = match e.strip_suffix(":retry") {
                Some(code) => (code, true),
                None => (*e, false),
            };
            RunOutcome::Failed { failure: Failure::new(code, "boom"), retryable }
        } else {
            RunOutcome::Returned
        };
        let conn = self.peer_conns.get(words[1]).copied().unwrap_or(ConnId(999));
        let r =
            self.sched.handle_result(self.now, &PeerId::from(words[1]), conn, id, attempt, outcome);
        self.ret(match r {
            Ok(ack) => format!("{ack:?}"),
            Err(e) => format!("{e:?}"),
        });
    }

    fn ret(&mut self, text: String) {
        writeln!(self.log, "  => {text}").unwrap();
    }

    /// Moves the scheduler's outputs into the log.
    pub fn drain(&mut self) {
        while let Some(cmd) = self.sched.poll_command() {
            let line = self.describe_command(cmd);
            writeln!(self.log, "  {line}").unwrap();
        }
        while let Some(event) = self.sched.poll_event() {
            if self.show_events {
                writeln!(self.log, "  ev {}", describe_event(&event)).unwrap();
            }
        }
    }

    fn describe_command(&self, cmd: Command<String>) -> String {
        let peer_of = |conn: ConnId| {
            self.peer_conns.iter().find(|(_, c)| **c == conn).map_or("?", |(p, _)| p.as_str())
        };
        match cmd {
            Command::Assign { conn, peer, task, attempt } => {
                // The id the peer sees, where it is not the submitter's.
                let seen = if task.peer_task_id == task.client_task_id {
                    String::new()
                } else {
                    format!(" as {}", task.peer_task_id)
                };
                format!("assign {}{attempt}{seen} {} -> {peer} ({conn})", task.id, task.payload)
            }
            Command::Cancel { conn, task, attempt, reason } => {
                format!("cancel {task}{attempt} on {} ({reason})", peer_of(conn))
            }
            Command::Deliver { gamer, task, outcome, attempts, .. } => {
                let what = match outcome {
                    Outcome::Completed { result, attempt, peer } => {
                        format!("completed {result} by {peer}{attempt}")
                    }
                    other => describe_outcome(&other).to_string(),
                };
                format!(
                    "deliver {} ({}) to {gamer}: {what} after {attempts}",
                    task.id, task.client_task_id
                )
            }
            Command::ClosePeer { conn, reason } => format!("close peer {conn} ({reason})"),
            Command::CloseGamer { conn, reason } => format!("close gamer {conn} ({reason})"),
        }
    }
}

fn describe_outcome(outcome: &Outcome<String>) -> String {
    match outcome {
        Outcome::Completed { result, .. } => format!("completed {result}"),
        Outcome::Failed(f) => format!("failed {f}"),
        Outcome::Cancelled => "cancelled".to_owned(),
        Outcome::TimedOut(f) => format!("timed_out {f}"),
    }
}

pub fn describe_event(event: &Event<String>) -> String {
    match event {
        Event::IdsReserved { next } => format!("ids reserved below {next}"),
        Event::TaskSubmitted { task } => format!("submitted {}", task.id),
        Event::TaskAssigned { task, peer, attempt, .. } => {
            format!("assigned {task}{attempt} {peer}")
        }
        Event::TaskStarted { task, attempt, .. } => format!("started {task}{attempt}"),
        Event::TaskReclaimed { task, peer, attempt, .. } => {
            format!("reclaimed {task}{attempt} {peer}")
        }
        Event::TaskRequeued { task, attempt, reason, failures, .. } => {
            format!("requeued {task}{attempt} {} failures={failures}", reason.as_str())
        }
        Event::TaskFinished { task, outcome, attempts, .. } => {
            format!("finished {} {} attempts={attempts}", task.id, describe_outcome(outcome))
        }
        Event::StaleResult { task, attempt, peer, .. } => {
            format!("stale {task}{attempt} from {peer}")
        }
        Event::Delivered { task } => format!("delivered {task}"),
        Event::Undelivered { task } => format!("undelivered {task}"),
        Event::Evicted { tasks } => format!("evicted {tasks:?}"),
        Event::PeerJoined { peer, .. } => format!("peer joined {peer}"),
        Event::PeerLeft { peer, reason, .. } => format!("peer left {peer} {}", reason.as_str()),
        Event::PeerDraining { peer } => format!("peer draining {peer}"),
        Event::TaskRetried { task, peer_task_id, .. } => {
            format!("retried {task} as {peer_task_id}")
        }
        Event::PeerPaused { peer, paused } => format!("peer paused={paused} {peer}"),
        Event::GamerJoined { gamer, .. } => format!("gamer joined {gamer}"),
        Event::GamerLeft { gamer, .. } => format!("gamer left {gamer}"),
        Event::Verified { task, verification, .. } => {
            let replicas: Vec<String> = verification
                .replicas
                .iter()
                .map(|r| {
                    let by = r.peer.as_ref().map_or("-".to_owned(), ToString::to_string);
                    format!("{}@{by}:{}", r.task, r.verdict.as_str())
                })
                .collect();
            format!("verified {task} {} [{}]", verification.status.as_str(), replicas.join(" "))
        }
        Event::Disagreed { task, .. } => format!("disagreed {task}"),
        Event::Reputation { subject, reputation: r, .. } => format!(
            "reputation {subject} valid={} invalid={} unverified={} cv={} strikes={}{}",
            r.valid,
            r.invalid,
            r.unverified,
            r.consecutive_valid,
            r.strikes,
            if r.quarantined { " quarantined" } else { "" }
        ),
        Event::Quarantined { peer } => format!("quarantined {peer}"),
        Event::Cleared { peer } => format!("cleared {peer}"),
        Event::CanaryAnswered { peer, passed, .. } => {
            format!("canary {peer} {}", if *passed { "passed" } else { "failed" })
        }
    }
}

pub fn duration(text: &str) -> Duration {
    if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap())
    } else if let Some(s) = text.strip_suffix('s') {
        Duration::from_secs_f64(s.parse().unwrap())
    } else {
        panic!("duration {text}")
    }
}

fn caps(opts: &BTreeMap<&str, &str>) -> PeerCaps {
    let list = |k: &str| -> Option<std::collections::BTreeSet<Arc<str>>> {
        opts.get(k).map(|v| v.split(',').map(Arc::from).collect())
    };
    PeerCaps {
        task_types: list("types"),
        slots: opts.get("slots").map_or(1, |s| s.parse().unwrap()),
        models: opts.get("models").map_or_else(Default::default, |v| {
            v.split(',')
                .map(|m| match m.split_once(':') {
                    Some((name, task_type)) => (Arc::from(name), Some(Arc::from(task_type))),
                    None => (Arc::from(m), None),
                })
                .collect()
        }),
        gpus_vram_mb: opts.get("gpu").map_or(Vec::new(), |v| vec![v.parse().ok()]),
        echoes_ids: opts.contains_key("echoes"),
    }
}

fn claims(text: &str) -> Vec<(TaskId, Attempt)> {
    text.split(',')
        .map(|c| {
            let (id, attempt) = task_ref(c);
            (id, attempt.unwrap_or(Attempt(1)))
        })
        .collect()
}

/// `t-3` or `t-3#2`.
fn task_ref(text: &str) -> (TaskId, Option<Attempt>) {
    match text.split_once('#') {
        Some((id, a)) => (id.parse().unwrap(), Some(Attempt(a.parse().unwrap()))),
        None => (text.parse().unwrap(), None),
    }
}

fn owner(word: &str) -> Owner {
    if word == "api" { Owner::Api } else { Owner::Gamer(GamerId::from(word)) }
}

fn submission(words: &[&str], opts: &BTreeMap<&str, &str>, gpu: bool) -> Submission<String> {
    let payload = opts.get("p").map_or_else(|| "x".to_owned(), |p| (*p).to_owned());
    let mut sub = Submission::new(owner(words[1]), words[2], payload);
    sub.client_task_id = opts.get("id").map(|s| Arc::from(*s));
    sub.priority = opts.get("prio").map_or(1, |p| p.parse().unwrap());
    sub.idempotency_key = opts.get("key").map(|s| Arc::from(*s));
    sub.requirements = Requirements {
        model: opts.get("model").map(|s| Arc::from(*s)),
        gpu,
        min_vram_mb: opts.get("vram").map(|v| v.parse().unwrap()),
    };
    sub.run_timeout = opts.get("timeout").map(|t| duration(t));
    sub.queue_timeout = opts.get("qtimeout").map(|t| duration(t));
    sub.max_attempts = opts.get("attempts").map(|a| a.parse().unwrap());
    sub.stream = words.contains(&"stream");
    sub.verify = opts.get("verify").map(|v| Policy::parse(v).unwrap());
    sub
}

/// A config with round numbers for scripts: 15 s heartbeat timeout, 1 s
/// back-off without jitter growth surprises (jitter is seeded, so stable).
pub fn config() -> Config {
    Config {
        retry_backoff: crate::Backoff { base: Duration::from_secs(1), max: Duration::from_secs(8) },
        ..Config::default()
    }
}

/// Runs `script` and compares the log with `expect` (both trimmed, with
/// leading indentation of `expect` removed).
#[track_caller]
pub fn check(script: &str, expect: &str) {
    check_with(config(), false, script, expect);
}

/// Like [`check`], with events in the log.
#[track_caller]
pub fn check_events(script: &str, expect: &str) {
    check_with(config(), true, script, expect);
}

#[track_caller]
pub fn check_with(config: Config, show_events: bool, script: &str, expect: &str) {
    let mut world = World::new(config);
    world.show_events = show_events;
    world.run(script);
    let actual = normalize(&world.log);
    let expect = normalize(expect);
    if actual != expect {
        panic!("\n--- expected\n{expect}\n--- actual\n{actual}\n");
    }
}

fn normalize(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let indent = lines.iter().map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    lines.iter().map(|l| l[indent..].trim_end()).collect::<Vec<_>>().join("\n")
}
