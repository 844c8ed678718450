#!/usr/bin/env bash
# Create .venv with the pinned detection stack and install dipkd-repro into it.
#
# - torch/torchvision are installed from the pins in pyproject.toml;
# - mmcv 2.1.0 has no wheel for torch 2.14, so it is built once from its source
#   distribution (MMCV_WITH_OPS=1, C++ standard raised to C++20 for torch 2.14's headers)
#   and the wheel is cached OUTSIDE the clone, keyed by mmcv version, torch version,
#   CPU/CUDA version and GPU architectures, in
#   ${DIPKD_WHEEL_CACHE:-${XDG_CACHE_HOME:-~/.cache}/dipkd-repro/wheels};
# - with a GPU, scripts/cuda_plan.py decides how: nvcc of torch's CUDA major version, else
#   NVIDIA's compiler packages from the registry, else a one-line error; after the install
#   mmcv's nms must run on cuda:0;
# - a second run with nothing changed is a fast no-op (a stamp file records what was installed,
#   including the GPUs and nvcc seen).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
MMCV_VERSION="2.1.0"
CACHE="${DIPKD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dipkd-repro/wheels}"

say() { printf '[setup] %s\n' "$*"; }

command -v "$PY" >/dev/null || PY=python3
stamp_key="$( (cat pyproject.toml scripts/setup.sh scripts/cuda_plan.py; "$PY" --version;
               "$PY" scripts/cuda_plan.py --signature) | sha256sum | cut -c1-16)"
STAMP="$VENV/.dipkd-setup-$stamp_key"
if [ -f "$STAMP" ]; then
    say "environment up to date ($VENV); nothing to do"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_() { "$VPY" -m pip --disable-pip-version-check "$@"; }

have_version() {  # have_version <dist> <version>
    [ "$("$VPY" - "$1" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
print(version(sys.argv[1]).split("+")[0])
EOF
)" = "$2" ]
}

if have_version torch "$TORCH_VERSION" && have_version torchvision "$TORCHVISION_VERSION"; then
    say "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION already installed"
else
    say "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION (large download on a new machine)"
    pip_ install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
# CPU or CUDA ops, for which GPUs, with which nvcc (scripts/cuda_plan.py).
TORCH_CUDA="$("$VPY" -c 'import torch; print(torch.version.cuda or "")')"
eval "$("$VPY" scripts/cuda_plan.py --torch-cuda "$TORCH_CUDA")"
say "$MESSAGE"
case "$ACTION" in
    error) echo "[setup] error: $MESSAGE" >&2; exit 1 ;;
    install-nvcc)
        # shellcheck disable=SC2086
        pip_ install -q $PACKAGES
        site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        CUDA_HOME="$("$VPY" scripts/cuda_plan.py --cuda-home-from-packages "$site")"
        export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
        got="$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
        if [ "${got%%.*}" != "${TORCH_CUDA%%.*}" ]; then
            echo "[setup] error: installed nvcc $got does not match torch's CUDA $TORCH_CUDA" >&2
            exit 1
        fi
        say "using nvcc $got from $CUDA_HOME" ;;
    build) export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$NVCC")")}" ;;
esac
if [ "$ACCEL" != cpu ]; then export TORCH_CUDA_ARCH_LIST="$ARCH"; fi
KEY="$("$VPY" scripts/cuda_plan.py --wheel-key "$MMCV_VERSION" "$TORCH_VERSION" "$ACCEL" "$ARCH" \
       "$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')")"
WHEEL_DIR="$CACHE/$KEY"
MMCV_MARK="$VENV/.dipkd-mmcv-$KEY"

if have_version mmcv "$MMCV_VERSION" && "$VPY" -c 'import mmcv.ops' 2>/dev/null \
        && { [ -f "$MMCV_MARK" ] || [ "$ACCEL" = cpu ]; }; then
    say "mmcv $MMCV_VERSION with ops already installed ($KEY)"
else
    wheel="$(ls "$WHEEL_DIR"/mmcv-*.whl 2>/dev/null | head -n1 || true)"
    if [ -z "$wheel" ]; then
        say "no cached mmcv wheel for $KEY: building mmcv $MMCV_VERSION from source (about 15 min on 2 cores; cached for the next clone)"
        work="$(mktemp -d)"
        trap 'rm -rf "$work"; pip_ install -q "setuptools>=77" >/dev/null 2>&1 || true' EXIT
        say "installing build tools for mmcv (setuptools<70: mmcv's setup.py imports pkg_resources;"
        say "pip will warn that torch wants setuptools>=77: it is restored after the build)"
        pip_ install -q "setuptools<70" wheel ninja packaging
        pip_ download --no-deps --no-binary :all: --no-build-isolation -d "$work" "mmcv==$MMCV_VERSION"
        tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
        src="$work/mmcv-$MMCV_VERSION"
        # torch >= 2.14 headers refuse anything below C++20.
        grep -q -- '-std=c++1[47]' "$src/setup.py" || { echo "[setup] error: mmcv setup.py has no -std=c++14/17 flag to raise; layout changed" >&2; exit 1; }
        sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"
        export MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
        if [ "$ACCEL" != cpu ]; then export FORCE_CUDA=1; fi
        log="$work/build.log"
        say "compiling with MAX_JOBS=$MAX_JOBS (log: $log; one dot per compiled source file)"
        (cd "$src" && pip_ wheel -v --no-build-isolation --no-deps -w "$work/dist" . 2>&1) \
            | tee "$log" | awk '/(gcc|g\+\+|c\+\+|nvcc).* -c / { printf "."; n++; if (n % 80 == 0) print ""; fflush() } END { print "" }' || true
        built="$(ls "$work"/dist/mmcv-*.whl 2>/dev/null | head -n1 || true)"
        if [ -z "$built" ]; then
            tail -n 40 "$log" >&2
            echo "[setup] error: mmcv build failed (see log above)" >&2
            exit 1
        fi
        mkdir -p "$WHEEL_DIR"
        # Copy then rename: a cut build never leaves a half wheel in the cache.
        cp "$built" "$WHEEL_DIR/.partial.whl"
        mv "$WHEEL_DIR/.partial.whl" "$WHEEL_DIR/$(basename "$built")"
        wheel="$WHEEL_DIR/$(basename "$built")"
        say "cached $wheel"
        say "restoring setuptools>=77 (torch 2.14 needs it)"
        pip_ install -q "setuptools>=77"
    else
        say "reusing cached mmcv wheel $wheel"
    fi
    pip_ install --no-deps --force-reinstall "$wheel"
fi
rm -f "$VENV"/.dipkd-mmcv-*
touch "$MMCV_MARK"
if [ "$ACCEL" != cpu ]; then
    if ! "$VPY" - <<'EOF'
import torch
from mmcv.ops import nms
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]], device="cuda:0")
nms(boxes, torch.tensor([0.9, 0.8], device="cuda:0"), 0.5)
EOF
    then
        echo "[setup] error: mmcv's nms does not run on cuda:0 (mmcv built for $KEY); see above" >&2
        rm -f "$MMCV_MARK"
        exit 1
    fi
    say "mmcv's CUDA ops run on cuda:0"
fi

say "installing dipkd-repro and its pinned dependencies"
pip_ install -q -e ".[test]"
"$VPY" -c 'import mmcv.ops, mmdet, mmengine; print("[setup] stack ok: mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmengine", mmengine.__version__)'
rm -f "$VENV"/.dipkd-setup-*
touch "$STAMP"
say "done"
