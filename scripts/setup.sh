#!/usr/bin/env bash
# Installs what building legacygpu needs beyond Rust, on Debian or Ubuntu:
# llama.cpp (the `generate` executor) is compiled from source with its
# Vulkan backend, which takes a C++ compiler, CMake, libclang (for the
# bindings), the Vulkan headers and loader, the glslc shader compiler and
# the SPIR-V headers. Mesa's Vulkan drivers give a software GPU (lavapipe)
# where there is no real one, and drive AMD and Intel cards (RADV, ANV).
#
#   scripts/setup.sh && cargo run --release -p cli -- demo
#
# Installs only what is missing; safe to run again. .ci/run installs the
# same packages (keep the two lists alike: a test checks they are).
set -euo pipefail

packages=(build-essential cmake libclang-dev libvulkan-dev glslc spirv-headers mesa-vulkan-drivers)

if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    echo "setup.sh: no apt-get here; install the equivalents of: ${packages[*]}" >&2
    exit 1
fi
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup.sh: everything is installed"
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup.sh: done"
