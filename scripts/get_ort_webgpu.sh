#!/usr/bin/env bash
# Fetch what the ort-webgpu inference backend's tests need, into DIR, from
# the package registries only, without touching the system:
#   - ONNX Runtime 1.32.0 (PyPI `onnxruntime`, its libonnxruntime.so does not
#     need Python) and the WebGPU plugin EP 0.4.0 (PyPI
#     `onnxruntime-ep-webgpu`; Dawn linked in, needs only libvulkan.so.1):
#     `pip download --no-deps`, then the two libraries are unzipped;
#   - Mesa 25's lavapipe from Debian bookworm-backports: Dawn refuses
#     bookworm's lavapipe 22.3.6 (no shaderSampledImage/StorageImage array
#     dynamic indexing). A private apt state (the system's sources, lists and
#     installed Mesa are left alone), `apt-get download`, `dpkg-deb -x`, and
#     an ICD manifest for VK_DRIVER_FILES pointing at the extracted driver.
# Prints the environment the tests read (eval it). Reuses what DIR holds.
# Usage: eval "$(scripts/get_ort_webgpu.sh DIR)"
set -euo pipefail
dir="$(mkdir -p "${1:?usage: get_ort_webgpu.sh DIR}" && cd "$1" && pwd)"

ort_lib="$dir/ort/onnxruntime/capi/libonnxruntime.so.1.32.0"
ep_lib="$dir/ort/onnxruntime_ep_webgpu/libonnxruntime_providers_webgpu.so"
if [ ! -f "$ort_lib" ] || [ ! -f "$ep_lib" ]; then
    mkdir -p "$dir/wheels" "$dir/ort"
    # The wheel tags this machine's pip accepts (CPython 3.11 on bookworm).
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
        -d "$dir/wheels" onnxruntime==1.32.0 onnxruntime-ep-webgpu==0.4.0 >&2
    for wheel in "$dir"/wheels/onnxruntime-1.32.0-*.whl "$dir"/wheels/onnxruntime_ep_webgpu-0.4.0-*.whl; do
        python3 -m zipfile -e "$wheel" "$dir/ort"
    done
fi

# The backports build of Mesa 25.0.7 is built against bookworm's LLVM 15 and
# runs with bookworm's libdrm; a newer backport is taken if this one is gone.
mesa_version="25.0.7-2~bpo12+1"
lvp="$dir/mesa/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
if [ ! -f "$lvp" ]; then
    apt_dir="$dir/mesa/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dir/mesa/debs"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || { echo "get_ort_webgpu.sh: $keyring missing (not Debian?)" >&2; exit 1; }
    # The system's Debian mirror (a CI may have its own), else deb.debian.org.
    mirror="${LEGACYGPU_DEBIAN_MIRROR:-$(sed -n 's#^URIs: *\(.*/debian\)/*$#\1#p' \
        /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    cat > "$apt_dir/sources.list" <<EOS
deb [signed-by=$keyring] $mirror bookworm main
deb [signed-by=$keyring] $mirror bookworm-backports main
EOS
    apt=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
         -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
    apt-get "${apt[@]}" update -qq >&2
    (cd "$dir/mesa/debs" && { apt-get "${apt[@]}" download -qq "mesa-vulkan-drivers=$mesa_version" \
        || apt-get "${apt[@]}" download -qq mesa-vulkan-drivers/bookworm-backports; } >&2)
    dpkg-deb -x "$(ls "$dir"/mesa/debs/mesa-vulkan-drivers_*.deb | head -n 1)" "$dir/mesa/root"
fi
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lvp\"#" \
    "$dir/mesa/root/usr/share/vulkan/icd.d/lvp_icd.json" > "$dir/mesa/lvp_icd.json"

printf 'export LEGACYGPU_ONNXRUNTIME_LIB=%q\n' "$ort_lib"
printf 'export LEGACYGPU_ORT_WEBGPU_EP=%q\n' "$ep_lib"
printf 'export LEGACYGPU_TEST_ORT_VK_DRIVER_FILES=%q\n' "$dir/mesa/lvp_icd.json"
