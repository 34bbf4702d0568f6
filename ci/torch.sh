#!/usr/bin/env bash
# CI for the optional libtorch backend (cargo feature `tch`): builds and
# tests qroute-learn against libtorch 2.13.0 from the PyPI torch wheel.
#
# The venv and the cargo target dir are cached under ~/.cache/qroute-torch
# (override with QROUTE_TORCH_CACHE), so a rerun installs nothing and
# rebuilds only what changed; the torch-sys C++ shim (~2 min) is built once.
# The separate target dir keeps the feature build from invalidating the
# default one.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${QROUTE_TORCH_CACHE:-$HOME/.cache/qroute-torch}"
venv="$cache/venv"
# tch 0.26.0 links exactly libtorch 2.13.0 (see README, "The optional torch backend").
torch_version=2.13.0

if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('torch') == '$torch_version'" 2>/dev/null; then
    echo "ci/torch.sh: installing torch==$torch_version into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    # --no-deps: the CPU build needs only the wheel plus CUDA's runtime and
    # profiler libraries (which libtorch_cpu.so links), not the 2.7 GB of
    # other NVIDIA packages the full install pulls.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "torch==$torch_version"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "cuda-toolkit[cudart,cupti]==13.0.3"
fi

site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
export LIBTORCH="$site/torch"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR="$cache/target"
# One libtorch thread: the steps are small, and a thread per core stalls
# badly when the cores are shared (see README).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

cargo clippy --release -p qroute-learn --features tch --all-targets -- -D warnings
cargo test --release -p qroute-learn --features tch
