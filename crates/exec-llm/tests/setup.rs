//! The packages a fresh machine needs to build llama.cpp with Vulkan are
//! listed twice — `scripts/setup.sh` for people, `.ci/run` for CI — and must
//! stay alike, or CI would pass on a list people do not get.

use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn ci_installs_every_package_the_setup_script_installs() {
    let setup = read("scripts/setup.sh");
    let line = setup.lines().find(|l| l.starts_with("packages=(")).expect("a packages=( line");
    let packages: Vec<&str> =
        line.trim_start_matches("packages=(").trim_end_matches(')').split_whitespace().collect();
    assert!(packages.contains(&"libvulkan-dev") && packages.contains(&"glslc"), "{packages:?}");
    let ci = read(".ci/run");
    let installed: Vec<&str> = ci
        .lines()
        .filter(|l| l.contains("apt-get install"))
        .flat_map(str::split_whitespace)
        .collect();
    for p in packages {
        assert!(installed.contains(&p), ".ci/run does not install {p}");
    }
    assert!(ci.contains("gguf"), ".ci/run installs PyPI gguf for the test model");
    assert!(ci.contains("LEGACYGPU_REQUIRE_PYTHON_GGUF=1"));
}
