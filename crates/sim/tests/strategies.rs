//! Each placement strategy on a simulated fleet, showing the behaviour it
//! promises. The numbers printed here are quoted in docs/STRATEGIES.md.

use std::time::Duration;

use sched::{Requirements, Strategy};
use sim::fleet::{FleetPeer, FleetReport, gpu, mix, run_fleet, steady};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One fast peer and three slow ones (4× slower), one slot each.
fn fast_and_slow() -> Vec<FleetPeer> {
    let peer = |name, runtime| FleetPeer { name, runtime: ms(runtime), slots: 1, vram_mb: None };
    vec![peer("fast", 10), peer("slow-1", 40), peer("slow-2", 40), peer("slow-3", 40)]
}

/// Light load: a task every 15 ms, well under the fleet's capacity.
fn light() -> Vec<sim::fleet::Arrival> {
    steady(400, ms(15), "render", Requirements::default())
}

fn report(strategy: Strategy) -> FleetReport {
    let r = run_fleet(strategy, &fast_and_slow(), &light());
    eprintln!(
        "{strategy:<12} mean {:>5.1} ms  shares fast {:.2} slow {:.2}/{:.2}/{:.2}",
        r.mean_latency().as_secs_f64() * 1e3,
        r.share("fast"),
        r.share("slow-1"),
        r.share("slow-2"),
        r.share("slow-3"),
    );
    assert_eq!(r.completed, 400);
    r
}

#[test]
fn round_robin_takes_turns() {
    let r = report(Strategy::RoundRobin);
    for peer in ["fast", "slow-1", "slow-2", "slow-3"] {
        let share = r.share(peer);
        assert!((0.15..=0.35).contains(&share), "{peer}: {share}");
    }
}

#[test]
fn least_loaded_spreads_ties_instead_of_piling_on_the_first_peer() {
    let r = report(Strategy::LeastLoaded);
    for peer in ["fast", "slow-1", "slow-2", "slow-3"] {
        assert!(r.share(peer) >= 0.1, "{peer} starved: {:?}", r.ran_on);
    }
    assert!(r.share("fast") < 0.5, "piled on one peer: {:?}", r.ran_on);
}

#[test]
fn latency_prefers_the_measured_fastest_peer() {
    let rr = report(Strategy::RoundRobin);
    let r = report(Strategy::Latency);
    assert!(r.share("fast") > 0.6, "{:?}", r.ran_on);
    assert!(r.mean_latency() < rr.mean_latency());
}

#[test]
fn adaptive_uses_speed_and_load_and_starves_no_new_peer() {
    let rr = report(Strategy::RoundRobin);
    let r = report(Strategy::Adaptive);
    assert!(r.share("fast") > 0.5, "{:?}", r.ran_on);
    assert!(r.mean_latency() < rr.mean_latency());
    // Every peer was tried (and so measured): new peers get work.
    for peer in ["slow-1", "slow-2", "slow-3"] {
        assert!(r.ran_on.get(peer).copied().unwrap_or(0) >= 1, "{peer} never tried");
    }
}

#[test]
fn under_saturation_every_strategy_finishes_the_same_work() {
    let burst = steady(400, ms(1), "render", Requirements::default());
    for strategy in Strategy::ALL {
        let r = run_fleet(strategy, &fast_and_slow(), &burst);
        assert_eq!(r.completed, 400, "{strategy}");
        // Every free slot is filled: all four peers work.
        assert_eq!(r.ran_on.len(), 4, "{strategy}: {:?}", r.ran_on);
    }
}

/// A CPU box, a small GPU (4 GiB) and a big GPU (24 GiB), two slots each.
fn gpu_fleet() -> Vec<FleetPeer> {
    let peer = |name, vram| FleetPeer { name, runtime: ms(20), slots: 2, vram_mb: vram };
    vec![peer("cpu", None), peer("small-gpu", Some(4096)), peer("big-gpu", Some(24576))]
}

fn gpu_workload() -> Vec<sim::fleet::Arrival> {
    mix(vec![
        steady(100, ms(40), "physics", Requirements::default()),
        steady(100, ms(40), "small", gpu(2048)),
        steady(50, ms(80), "big", gpu(16384)),
    ])
}

#[test]
fn gpu_match_keeps_gpus_for_gpu_work_and_big_gpus_for_big_work() {
    let r = run_fleet(Strategy::GpuMatch, &gpu_fleet(), &gpu_workload());
    let rr = run_fleet(Strategy::RoundRobin, &gpu_fleet(), &gpu_workload());
    let on = |r: &FleetReport, t, p| r.ran_by_type.get(&(t, p)).copied().unwrap_or(0);
    eprintln!("GPU_MATCH {:?}\nROUND_ROBIN {:?}", r.ran_by_type, rr.ran_by_type);
    // CPU work stays on the CPU box; round-robin sends it to GPUs too.
    assert_eq!(on(&r, "physics", "cpu"), 100);
    assert!(on(&rr, "physics", "big-gpu") + on(&rr, "physics", "small-gpu") > 0);
    // Small GPU work goes to the smallest GPU that fits.
    assert_eq!(on(&r, "small", "small-gpu"), 100);
    // Big GPU work can only run on the big GPU, under any strategy.
    assert_eq!(on(&r, "big", "big-gpu"), 50);
    assert_eq!(on(&rr, "big", "big-gpu"), 50);
}
