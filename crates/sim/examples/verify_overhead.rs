//! What verification costs an honest fleet: tasks under `2/2/adaptive`
//! (BOINC's adaptive replication) on peers that always answer right, through
//! the real scheduler and the real agreement rules. New workers are always
//! replicated; once trusted (10 consecutive valid results) a worker's work
//! is replicated with probability 1/CV, so the extra work falls as the fleet
//! earns trust. Prints the overhead — replicas beyond each task's first, per
//! task — over all tasks and over the second half, once trust has settled.
//!
//! ```sh
//! cargo run --release -p sim --example verify_overhead -- [TASKS] [PEERS]
//! ```

use sched::verify::Policy;
use sched::{Command, Config, ConnId, Owner, PeerCaps, PeerId, PeerJoin, RunOutcome, Scheduler};
use sched::{Submission, Time};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().expect("a number"));
    let tasks = args.next().unwrap_or(20_000);
    let peers = args.next().unwrap_or(8);
    let mut now = Time::from_secs(1_700_000_000);
    let mut s: Scheduler<proto::Json> = Scheduler::new(Config::default(), now);
    s.set_agreement(Box::new(agree::Rules::builtin(7)));
    for i in 0..peers {
        let join =
            PeerJoin::new(PeerId::from(format!("p{i}").as_str()), ConnId(i), PeerCaps::default());
        s.handle_peer_joined(now, join);
    }
    let policy = Policy::new(2, 2, true).expect("a valid policy");
    let mut half = None;
    for i in 0..tasks {
        if i == tasks / 2 {
            half = Some(s.counters().verify);
        }
        now = now + std::time::Duration::from_millis(1);
        let mut sub =
            Submission::new(Owner::Api, "echo", proto::json(&i.to_string()).expect("JSON"));
        sub.verify = Some(policy);
        s.handle_submit(now, sub).expect("accepted");
        // Every peer answers at once, and right.
        while let Some(cmd) = s.poll_command() {
            if let Command::Assign { conn, peer, task, attempt } = cmd {
                let done = RunOutcome::Completed(task.payload.clone());
                s.handle_result(now, &peer, conn, task.id, Some(attempt), done).expect("a result");
            }
        }
        while s.poll_event().is_some() {}
    }
    let all = s.counters().verify;
    let half = half.unwrap_or_default();
    let second = tasks - tasks / 2;
    let ratio = |extra: u64, n: u64| extra as f64 / n.max(1) as f64;
    println!(
        "{tasks} tasks on {peers} honest peers under 2/2/adaptive: verified {} trusted {} \
         no_quorum {}; overhead {:.1} % over all tasks, {:.1} % over the second half",
        all.verified,
        all.trusted,
        all.no_quorum,
        100.0 * ratio(all.extra_replicas, tasks),
        100.0 * ratio(all.extra_replicas - half.extra_replicas, second),
    );
}
