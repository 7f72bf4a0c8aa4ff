use exec::{ExecError, Executor, RunContext};
use serde_json::{Value, json};

use super::*;

fn run(input: Value) -> Result<Value, ExecError> {
    Physics::default()
        .run(&input.to_string(), &RunContext::unbounded())
        .map(|out| serde_json::from_str(out.get()).unwrap())
}

fn code(input: Value) -> exec::FailureCode {
    run(input).unwrap_err().code()
}

fn sphere(id: Value, y: f32) -> Value {
    json!({"id": id, "shape": {"type": "sphere", "radius": 0.5}, "position": [0.0, y, 0.0]})
}

fn body(out: &Value, i: usize) -> &Value {
    &out["bodies"][i]
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn a_falling_sphere_follows_free_fall() {
    let out = run(json!({"steps": 60, "dt": 1.0 / 60.0, "bodies": [sphere(json!("ball"), 100.0)]}))
        .unwrap();
    let b = body(&out, 0);
    // y = y0 - g t² / 2 after t = 1 s; symplectic Euler lands within a few cm.
    let y = f(&b["position"][1]);
    assert!((y - (100.0 - 9.81 / 2.0)).abs() < 0.2, "y = {y}");
    let vy = f(&b["linear_velocity"][1]);
    assert!((vy + 9.81).abs() < 0.05, "vy = {vy}");
    assert_eq!(b["id"], "ball");
    assert_eq!(out["steps"], 60);
}

#[test]
fn a_sphere_comes_to_rest_on_the_ground() {
    let out = run(json!({"steps": 240, "ground": {"y": 0.0}, "bodies": [sphere(json!(7), 3.0)]}))
        .unwrap();
    let b = body(&out, 0);
    let y = f(&b["position"][1]);
    assert!((y - 0.5).abs() < 0.05, "resting height {y}");
    assert!(f(&b["linear_velocity"][1]).abs() < 0.1);
    assert_eq!(b["id"], 7);
}

#[test]
fn a_fixed_body_does_not_move_and_a_box_lands_on_it() {
    let input = json!({
        "steps": 180,
        "bodies": [
            {"id": "table", "shape": {"type": "box", "half_extents": [2.0, 0.5, 2.0]}, "fixed": true},
            {"id": "cup", "shape": {"type": "capsule", "half_height": 0.2, "radius": 0.2},
             "position": [0.0, 2.0, 0.0], "mass": 0.3},
        ]
    });
    let out = run(input).unwrap();
    assert_eq!(body(&out, 0)["position"], json!([0.0, 0.0, 0.0]));
    assert_eq!(body(&out, 0)["linear_velocity"], json!([0.0, 0.0, 0.0]));
    // The capsule (total half-height 0.4) rests on the table top at 0.5.
    let y = f(&body(&out, 1)["position"][1]);
    assert!((y - 0.9).abs() < 0.1, "capsule at {y}");
}

#[test]
fn the_same_scene_gives_bit_identical_results() {
    let scene = example_scene(60, 120);
    let a = run(scene.clone()).unwrap();
    let b = run(scene).unwrap();
    assert_eq!(a["bodies"], b["bodies"]);
    assert_eq!(a["checksum"], b["checksum"]);
    assert_eq!(a["checksum"].as_str().unwrap().len(), 16);
}

#[test]
fn the_checksum_changes_with_the_state() {
    let limits = Limits::default();
    let s1 = Scene::parse(&example_scene(4, 10).to_string(), &limits).unwrap();
    let s2 = Scene::parse(&example_scene(4, 11).to_string(), &limits).unwrap();
    let ctx = RunContext::unbounded();
    assert_ne!(checksum(&simulate(&s1, &ctx).unwrap()), checksum(&simulate(&s2, &ctx).unwrap()));
}

#[test]
fn rotations_are_normalised_and_applied() {
    let input = json!({"steps": 0, "gravity": [0, 0, 0], "bodies": [
        {"id": 1, "shape": {"type": "box", "half_extents": [1, 1, 1]}, "rotation": [0.0, 0.0, 2.0, 2.0]}
    ]});
    let out = run(input).unwrap();
    let q: Vec<f64> = body(&out, 0)["rotation"].as_array().unwrap().iter().map(f).collect();
    let h = std::f64::consts::FRAC_1_SQRT_2;
    for (got, want) in q.iter().zip([0.0, 0.0, h, h]) {
        assert!((got - want).abs() < 1e-6, "{q:?}");
    }
}

#[test]
fn bad_inputs_are_refused_with_the_field_named() {
    let one = |b: Value| json!({"steps": 1, "bodies": [b]});
    let cases = [
        (json!("not an object"), "invalid_input"),
        (json!({"bodies": []}), "invalid_input"),
        (json!({"steps": 1, "bodies": [], "wind": 3}), "invalid_input"),
        (json!({"steps": -1, "bodies": []}), "invalid_input"),
        (json!({"steps": 1, "dt": 0, "bodies": []}), "invalid_input"),
        (json!({"steps": 1, "dt": 5, "bodies": []}), "invalid_input"),
        (json!({"steps": 1, "gravity": [0, 1e39, 0], "bodies": []}), "invalid_input"),
        (one(json!({"id": 1, "shape": {"type": "cone", "radius": 1}})), "invalid_input"),
        (one(json!({"id": 1, "shape": {"type": "sphere", "radius": -1}})), "invalid_input"),
        (
            one(json!({"id": 1, "shape": {"type": "box", "half_extents": [1, 0, 1]}})),
            "invalid_input",
        ),
        (
            one(json!({"id": 1, "shape": {"type": "capsule", "half_height": 1, "radius": 0}})),
            "invalid_input",
        ),
        (
            one(
                json!({"id": 1, "shape": {"type": "sphere", "radius": 1}, "position": [0, 1e39, 0]}),
            ),
            "invalid_input",
        ),
        (
            one(json!({"id": 1, "shape": {"type": "sphere", "radius": 1}, "mass": 0})),
            "invalid_input",
        ),
        (
            one(
                json!({"id": 1, "shape": {"type": "sphere", "radius": 1}, "mass": 1, "density": 1}),
            ),
            "invalid_input",
        ),
        (
            one(
                json!({"id": 1, "shape": {"type": "sphere", "radius": 1}, "rotation": [0, 0, 0, 0]}),
            ),
            "invalid_input",
        ),
        (
            one(json!({"id": 1, "shape": {"type": "sphere", "radius": 1}, "friction": -1})),
            "invalid_input",
        ),
        (one(json!({"id": [1], "shape": {"type": "sphere", "radius": 1}})), "invalid_input"),
        (
            json!({"steps": 1, "bodies": [sphere(json!("a"), 1.0), sphere(json!("a"), 2.0)]}),
            "invalid_input",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(code(input.clone()), want, "{input}");
    }
    let err =
        run(one(json!({"id": "wheel", "shape": {"type": "sphere", "radius": -2}}))).unwrap_err();
    assert!(err.to_string().contains("body wheel: shape.radius"), "{err}");
}

#[test]
fn over_limit_work_is_refused() {
    let small = Physics::with_limits(Limits { max_bodies: 2, max_steps: 100, max_body_steps: 150 });
    let ctx = RunContext::unbounded();
    let code = |v: Value| small.run(&v.to_string(), &ctx).unwrap_err().code();
    assert_eq!(code(example_scene(3, 1)), "limit_exceeded");
    assert_eq!(code(example_scene(1, 101)), "limit_exceeded");
    assert_eq!(code(example_scene(2, 100)), "limit_exceeded");
    assert!(small.run(&example_scene(1, 100).to_string(), &ctx).is_ok());
}

#[test]
fn cancellation_and_deadlines_stop_a_run() {
    let scene = example_scene(10, 100_000).to_string();
    let ctx = RunContext::unbounded();
    ctx.cancel();
    assert_eq!(Physics::default().run(&scene, &ctx).unwrap_err(), ExecError::Cancelled);
    let past = RunContext::new(Some(std::time::Instant::now()));
    assert_eq!(Physics::default().run(&scene, &past).unwrap_err(), ExecError::TimedOut);
}
