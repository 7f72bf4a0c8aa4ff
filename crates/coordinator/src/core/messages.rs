//! Handling of decoded messages, by `msg_type`, with the role rules: peer
//! messages only on a connection registered as that peer, gamer messages only
//! on one registered as a gamer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proto::{
    Capabilities, ErrorCode, ErrorMsg, FailureCode, FromCoordinator, Json, RegisterGamer,
    RegisterPeer, RegistrationAck, RunningTask, TaskAccepted, TaskErrorOut, TaskNeeds, TaskRequest,
    TaskState, TaskStatusOut, ToCoordinator,
};
use sched::verify::Policy;
use sched::{
    Attempt, CancelError, ConnId, Failure, GamerId, Owner, PeerCaps, PeerError, PeerId, PeerJoin,
    Requirements, RunOutcome, Submission, SubmitError, TaskId,
};
use tracing::{info, warn};

use super::{Core, PeerInfo, Role};
use crate::identity::{self, SessionKey};

pub(super) fn handle(core: &mut Core, conn: ConnId, msg: ToCoordinator) {
    let Some(role) = core.conns.get(&conn).map(|c| c.role.clone()) else { return };
    let msg_type = msg.msg_type();
    match (msg, role) {
        (ToCoordinator::RegisterPeer(m), Role::Unregistered) => {
            if identity::claim(core, conn, SessionKey::Peer(m.peer_id.clone()), msg_type) {
                register_peer(core, conn, m)
            }
        }
        (ToCoordinator::RegisterPeer(m), Role::Peer(id)) if id.as_str() == m.peer_id => {
            register_peer(core, conn, m)
        }
        (ToCoordinator::RegisterGamer(m), Role::Unregistered) => {
            if identity::claim(core, conn, SessionKey::Gamer(m.gamer_id.clone()), msg_type) {
                register_gamer(core, conn, m)
            }
        }
        (ToCoordinator::Join(m), Role::Unregistered) => identity::join(core, conn, m),
        (ToCoordinator::RegisterGamer(m), Role::Gamer(id)) if id.as_str() == m.gamer_id => {
            register_gamer(core, conn, m)
        }
        (
            ToCoordinator::RegisterPeer(_)
            | ToCoordinator::RegisterGamer(_)
            | ToCoordinator::Join(_),
            role,
        ) => {
            let err = ErrorMsg::new(
                ErrorCode::ALREADY_REGISTERED,
                format!("this connection is already registered as {}", describe(&role)),
            );
            core.reply_error(conn, err.in_reply_to(msg_type));
        }
        (msg, Role::Peer(peer)) => peer_message(core, conn, &peer, msg),
        (msg, Role::Gamer(gamer)) => gamer_message(core, conn, &gamer, msg),
        (_, Role::Unregistered) => {
            let err = ErrorMsg::new(
                ErrorCode::NOT_REGISTERED,
                "register first: send register_peer (workers) or register_gamer (clients)",
            );
            core.reply_error(conn, err.in_reply_to(msg_type));
        }
    }
}

fn describe(role: &Role) -> String {
    match role {
        Role::Peer(id) => format!("peer `{id}`"),
        Role::Gamer(id) => format!("gamer `{id}`"),
        Role::Unregistered => "nothing".to_owned(),
    }
}

fn register_peer(core: &mut Core, conn: ConnId, m: RegisterPeer) {
    let caps = Capabilities::from_json(m.capabilities.as_ref());
    for warning in &caps.warnings {
        warn!(peer = %m.peer_id, "{warning}");
    }
    // A type's needs, once known, apply to every peer: the first say wins.
    for (task_type, needs) in &caps.task_needs {
        core.task_needs.entry(task_type.clone()).or_insert_with(|| needs.clone());
    }
    let id = PeerId::from(m.peer_id.as_str());
    // A claim naming no task the coordinator knows is stale too: told back
    // as the peer named it, so that the peer stops that run.
    let mut unknown = Vec::new();
    let mut running = Vec::with_capacity(m.running.len());
    let mut named = std::collections::HashMap::new();
    for r in &m.running {
        match peer_task(core, r.id.as_deref(), &r.task_id) {
            Some(task) => {
                running.push((task, Attempt(r.attempt)));
                named.insert(task, r.task_id.as_str());
            }
            None => unknown.push(r.clone()),
        }
    }
    let join = PeerJoin {
        id: id.clone(),
        conn,
        caps: peer_caps(&caps),
        running,
        owner: caps.owner.as_deref().map(Arc::from),
        credential: core.approvals.digest_of(&m.peer_id).map(Arc::from),
    };
    let slots = caps.slots();
    let now = core.now();
    let joined = core.sched.handle_peer_joined(now, join);
    if let Some(c) = core.conns.get_mut(&conn) {
        c.role = Role::Peer(id.clone());
    }
    info!(peer = %id, slots, replaced = joined.replaced, "peer registered");
    let remote = core.conns.get(&conn).map(|c| c.remote);
    let models = Arc::from(caps.model_info);
    let raw_caps = Arc::new(caps.raw);
    core.peer_info.insert(id.clone(), PeerInfo { heartbeat: None, raw_caps, remote, models });
    let ack = RegistrationAck {
        peer_id: Some(id.to_string()),
        heartbeat_interval_s: Some(core.config.heartbeat_interval.as_secs_f64()),
        heartbeat_timeout_s: Some(core.config.sched.heartbeat_timeout.as_secs_f64()),
        max_frame_bytes: Some(core.config.max_frame_bytes as u64),
        stale: joined
            .stale
            .iter()
            .map(|(t, a)| {
                // A task the coordinator does not know goes by the peer's name for it.
                let task_id = core.sched.task(*t).map_or_else(
                    || named.get(t).map_or_else(|| t.to_string(), |n| (*n).to_owned()),
                    |task| task.spec().peer_task_id.to_string(),
                );
                RunningTask { task_id, attempt: a.0, id: Some(t.to_string()) }
            })
            .chain(unknown)
            .collect(),
        ..RegistrationAck::registered()
    };
    // The ack goes before any assignment the join produced (flushed after this).
    core.send(conn, FromCoordinator::RegistrationAck(ack));
}

/// What the scheduler needs of a peer's capabilities.
pub(crate) fn peer_caps(caps: &Capabilities) -> PeerCaps {
    let set = |names: &[String]| -> BTreeSet<Arc<str>> {
        names.iter().map(|s| Arc::from(s.as_str())).collect()
    };
    PeerCaps {
        task_types: caps.task_types.as_deref().map(set),
        slots: caps.slots(),
        models: caps
            .model_info
            .iter()
            .map(|m| (Arc::from(m.name.as_str()), m.task_type.as_deref().map(Arc::from)))
            .collect(),
        gpus_vram_mb: caps.gpus.iter().map(|g| g.vram_mb).collect(),
        echoes_ids: caps.echoes_ids,
    }
}

fn register_gamer(core: &mut Core, conn: ConnId, m: RegisterGamer) {
    let id = GamerId::from(m.gamer_id.as_str());
    if let Some(c) = core.conns.get_mut(&conn) {
        c.role = Role::Gamer(id.clone());
    }
    let ack = RegistrationAck { gamer_id: Some(id.to_string()), ..RegistrationAck::registered() };
    core.send(conn, FromCoordinator::RegistrationAck(ack));
    let now = core.now();
    // Results that finished while the gamer was away follow the ack.
    core.sched.handle_gamer_joined(now, id.clone(), conn);
    if m.awaiting.is_empty() {
        return;
    }
    let owner = Owner::Gamer(id.clone());
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for task in m.awaiting {
        match core.sched.lookup(&owner, &task) {
            Some(t) => known.push((t, task)),
            None => unknown.push(task),
        }
    }
    let ids: Vec<_> = known.iter().map(|(t, _)| *t).collect();
    for t in core.sched.handle_awaiting(now, &id, conn, &ids) {
        unknown.extend(known.iter().filter(|(k, _)| *k == t).map(|(_, name)| name.clone()));
    }
    for task in unknown {
        unknown_awaited(core, conn, &task);
    }
}

/// A reconnecting gamer waits for a task the coordinator has no record of:
/// its one answer is this error, so that it does not wait for ever.
fn unknown_awaited(core: &mut Core, conn: ConnId, task: &str) {
    let reason = format!(
        "no record of task `{task}`: its result expired, or the coordinator restarted without a store"
    );
    let err = TaskErrorOut {
        task_id: task.to_owned(),
        id: String::new(),
        status: TaskState::Failed,
        code: FailureCode::UNKNOWN_TASK,
        reason,
        attempts: 0,
    };
    core.send(conn, FromCoordinator::TaskError(err));
}

fn peer_message(core: &mut Core, conn: ConnId, peer: &PeerId, msg: ToCoordinator) {
    let now = core.now();
    let msg_type = msg.msg_type();
    let result = match msg {
        ToCoordinator::Heartbeat(m) => {
            if m.peer_id != peer.as_str() {
                return mismatch(core, conn, peer, msg_type);
            }
            if let Some(info) = core.peer_info.get_mut(peer) {
                info.heartbeat = Some(m);
            }
            core.publisher.touch(peer);
            core.sched.handle_heartbeat(now, peer, conn)
        }
        ToCoordinator::TaskResult(m) => {
            let Some(task) = task_id(core, conn, m.id.as_deref(), &m.task_id, msg_type) else {
                return;
            };
            let outcome = match (m.error, m.result) {
                // The coordinator cancels only runs it no longer counts on: a
                // run it does count on that answers `cancelled` was stopped on
                // a cancel lost with a crash (or as stale, by a peer that
                // answers anyway). It is handed back, not the task's failure.
                (Some(err), _) if err.code == proto::FailureCode::CANCELLED => RunOutcome::Returned,
                (Some(err), _) => RunOutcome::Failed {
                    retryable: err.is_retryable(),
                    failure: Failure::new(err.code, err.message),
                },
                (None, Some(result)) => RunOutcome::Completed(result),
                (None, None) => return, // Refused by decoding already.
            };
            core.sched
                .handle_result(now, peer, conn, task, m.attempt.map(Attempt), outcome)
                .map(drop)
        }
        ToCoordinator::TaskStarted(m) => {
            let Some(task) = task_id(core, conn, m.id.as_deref(), &m.task_id, msg_type) else {
                return;
            };
            core.sched.handle_started(now, peer, conn, task, m.attempt.map(Attempt))
        }
        ToCoordinator::ReturnTask(m) => {
            let Some(task) = task_id(core, conn, m.id.as_deref(), &m.task_id, msg_type) else {
                return;
            };
            let attempt = m.attempt.map(Attempt);
            core.sched.handle_result(now, peer, conn, task, attempt, RunOutcome::Returned).map(drop)
        }
        ToCoordinator::Drain(_) => core.sched.handle_drain(now, peer, conn),
        ToCoordinator::TaskProgress(m) => super::stream::handle(core, conn, peer, m),
        other => {
            let err = ErrorMsg::new(
                ErrorCode::WRONG_ROLE,
                format!(
                    "`{}` is a gamer message; this connection is peer `{peer}`",
                    other.msg_type()
                ),
            );
            return core.reply_error(conn, err.in_reply_to(msg_type));
        }
    };
    match result {
        Ok(()) => {}
        Err(PeerError::NotRegistered) => {
            let err = ErrorMsg::new(
                ErrorCode::NOT_REGISTERED,
                format!(
                    "peer `{peer}` is not registered on this connection (it was replaced or declared dead); register again"
                ),
            );
            core.reply_error(conn, err.in_reply_to(msg_type));
        }
        Err(PeerError::UnknownTask(task)) => {
            let err = ErrorMsg::new(ErrorCode::UNKNOWN_TASK, format!("no task `{task}` is known"))
                .in_reply_to(msg_type)
                .task(task.to_string());
            core.reply_error(conn, err);
        }
    }
}

fn mismatch(core: &mut Core, conn: ConnId, peer: &PeerId, msg_type: &str) {
    let err = ErrorMsg::new(
        ErrorCode::PEER_ID_MISMATCH,
        format!("this connection is registered as peer `{peer}`"),
    );
    core.reply_error(conn, err.in_reply_to(msg_type));
}

/// The task a peer names: by the cluster id it echoes (`id`), else by the
/// `task_id` of its assignment.
pub(super) fn peer_task(core: &Core, id: Option<&str>, task_id: &str) -> Option<TaskId> {
    match id {
        Some(id) => TaskId::parse_cluster(id),
        None => core.sched.resolve_peer_task(task_id),
    }
}

/// The task a peer's message names, or an `unknown_task` reply.
fn task_id(
    core: &mut Core,
    conn: ConnId,
    id: Option<&str>,
    text: &str,
    msg_type: &str,
) -> Option<TaskId> {
    let found = peer_task(core, id, text);
    if found.is_none() {
        let err = ErrorMsg::new(ErrorCode::UNKNOWN_TASK, format!("no task `{text}` is known"))
            .in_reply_to(msg_type)
            .task(text);
        core.reply_error(conn, err);
    }
    found
}

fn gamer_message(core: &mut Core, conn: ConnId, gamer: &GamerId, msg: ToCoordinator) {
    let owner = Owner::Gamer(gamer.clone());
    match msg {
        ToCoordinator::TaskRequest(req) => submit(core, conn, owner, req),
        ToCoordinator::CancelTask(m) => {
            let Some(id) = core.sched.lookup(&owner, &m.task_id) else {
                return unknown_client_task(core, conn, &m.task_id, "cancel_task");
            };
            let now = core.now();
            if let Err(e) = core.sched.handle_cancel(now, &owner, id) {
                let (code, reason) = match e {
                    CancelError::AlreadyFinished(s) => (
                        ErrorCode::TASK_FINISHED,
                        format!("task `{}` already ended ({s})", m.task_id),
                    ),
                    CancelError::NotOwner | CancelError::UnknownTask => (
                        ErrorCode::UNKNOWN_TASK,
                        format!("no task `{}` of yours is known", m.task_id),
                    ),
                };
                let err = ErrorMsg::new(code, reason).in_reply_to("cancel_task").task(m.task_id);
                core.reply_error(conn, err);
            }
        }
        ToCoordinator::TaskStatus(m) => {
            let Some(id) = core.sched.lookup(&owner, &m.task_id) else {
                return unknown_client_task(core, conn, &m.task_id, "task_status");
            };
            if let Some(status) = task_status(core, id) {
                core.send(conn, FromCoordinator::TaskStatus(status));
            }
        }
        other => {
            let err = ErrorMsg::new(
                ErrorCode::WRONG_ROLE,
                format!(
                    "`{}` is a peer message; this connection is gamer `{gamer}`",
                    other.msg_type()
                ),
            );
            core.reply_error(conn, err.in_reply_to(other.msg_type()));
        }
    }
}

fn unknown_client_task(core: &mut Core, conn: ConnId, task: &str, msg_type: &str) {
    let err = ErrorMsg::new(ErrorCode::UNKNOWN_TASK, format!("no task `{task}` of yours is known"))
        .in_reply_to(msg_type)
        .task(task);
    core.reply_error(conn, err);
}

pub(crate) fn task_status(core: &Core, id: TaskId) -> Option<TaskStatusOut> {
    let task = core.sched.task(id)?;
    Some(TaskStatusOut {
        task_id: task.spec().client_task_id.to_string(),
        id: id.to_string(),
        status: task.status(),
        attempt: task.attempt().0,
        peer_id: task.peer().map(ToString::to_string),
        waiting_reason: core.sched.waiting_reason(id),
    })
}

fn submit(core: &mut Core, conn: ConnId, owner: Owner, req: TaskRequest) {
    let clients = crate::quota::clients_of(core, conn, &owner);
    // The gamer id stays bound to this credential across restarts.
    let submitter = core.conns.get(&conn).map(|c| Arc::clone(&c.principal_id));
    match crate::quota::accept(core, clients, owner, submitter, req) {
        Ok(msg) => core.send_durable(conn, FromCoordinator::TaskAccepted(msg)),
        Err(err) => core.reply_error(conn, err),
    }
}

/// Submits a task for `owner` (a gamer, or the HTTP API) by the credential
/// `submitter` names: the acknowledgement, which must not go out before the
/// store has committed what the core observed so far, or the error that
/// refused it.
pub(crate) fn accept(
    core: &mut Core,
    owner: Owner,
    submitter: Option<Arc<str>>,
    req: TaskRequest,
) -> Result<TaskAccepted, ErrorMsg> {
    let client_id = req.task_id.clone();
    let refuse = |err: ErrorMsg| {
        let err = err.in_reply_to("task_request");
        Err(match &client_id {
            Some(id) => err.task(id.clone()),
            None => err,
        })
    };
    if core.observer.store_overloaded() {
        let mut err = ErrorMsg::new(ErrorCode::BUSY, "the store is behind; retry shortly");
        err.retry_after_s = Some(1.0);
        return refuse(err);
    }
    let mut sub = submission(&core.task_needs, owner, req);
    sub.submitter = submitter;
    let now = core.now();
    match core.sched.handle_submit(now, sub) {
        Ok(acc) => {
            // Persist the submission (the event goes to the store) before the
            // acknowledgement is allowed out; what it caused (an assignment,
            // a finished task's outcome again) is sent by the caller's flush,
            // after the acknowledgement.
            core.flush_events();
            Ok(TaskAccepted {
                task_id: acc.client_task_id.to_string(),
                id: acc.id.to_string(),
                status: acc.status,
                existing: acc.existing,
                waiting_reason: acc.waiting_reason,
            })
        }
        Err(SubmitError::DuplicateTaskId { existing }) => {
            let id = client_id.clone().unwrap_or_default();
            refuse(ErrorMsg::new(
                ErrorCode::DUPLICATE_TASK_ID,
                format!(
                    "you already have a live task `{id}` ({existing}); use a new task_id, or an idempotency_key to resubmit safely"
                ),
            ))
        }
        Err(SubmitError::Busy { queued, retry_after }) => {
            let mut err = ErrorMsg::new(
                ErrorCode::BUSY,
                format!("the queue is full ({queued} tasks waiting); retry later"),
            );
            err.retry_after_s = Some(retry_after.as_secs_f64());
            refuse(err)
        }
    }
}

/// A scheduler submission from a wire request. Task types whose executors
/// need something of a peer (`needs`: a GPU, the model the data names) get
/// it as implicit requirements, so that peers declaring every type
/// (seed-literal peers) are not sent work they cannot do.
pub(crate) fn submission(
    needs: &BTreeMap<String, TaskNeeds>,
    owner: Owner,
    req: TaskRequest,
) -> Submission<Json> {
    let mut requirements = match req.requirements {
        Some(r) => {
            Requirements { model: r.model.map(Arc::from), gpu: r.gpu, min_vram_mb: r.min_vram_mb }
        }
        None => Requirements::default(),
    };
    if let Some(needs) = needs.get(&req.task_type) {
        requirements.gpu |= needs.gpu;
        if requirements.model.is_none()
            && let Some(field) = &needs.model_field
        {
            requirements.model = model_of(&req.data, field);
        }
    }
    Submission {
        owner,
        client_task_id: req.task_id.map(Arc::from),
        task_type: Arc::from(req.task_type),
        payload: req.data,
        priority: req.priority.unwrap_or_default().0,
        requirements,
        run_timeout: req.timeout_s.map(Duration::from_secs_f64),
        queue_timeout: req.queue_timeout_s.map(Duration::from_secs_f64),
        max_attempts: req.max_attempts,
        idempotency_key: req.idempotency_key.map(Arc::from),
        stream: req.stream,
        // Checked by the decoder already (1 ≤ quorum ≤ replicas ≤ 16).
        verify: req.verify.and_then(|v| Policy::new(v.replicas, v.quorum(), v.adaptive).ok()),
        submitter: None,
    }
}

/// The model a task's data names in `field`, if any.
fn model_of(data: &Json, field: &str) -> Option<Arc<str>> {
    let fields: BTreeMap<std::borrow::Cow<'_, str>, &serde_json::value::RawValue> =
        serde_json::from_str(data.get()).ok()?;
    let name: std::borrow::Cow<'_, str> = serde_json::from_str(fields.get(field)?.get()).ok()?;
    Some(Arc::from(name.as_ref()))
}
