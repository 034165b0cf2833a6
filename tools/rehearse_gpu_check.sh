#!/usr/bin/env bash
# Rehearses tools/gpu_check.sh on a machine with nvcc but no GPU, the way a
# bare CUDA machine would run it: a fresh Python 3.12 venv that holds only the
# CUDA build of torch, the wheels that `gpu_check.sh --download` fetches, and
# nvcc. It proves that
#   - the preflight stops before the build when the test tools are missing
#     or nvcc's CUDA major version is not torch's;
#   - the CUDA build succeeds and every op has a CUDA kernel;
#   - the op tests are collected and pass, the GPU ones skipped;
#   - the benchmark step says that there is no GPU.
# gpu_check.sh runs on a copy of the checkout, so the checkout's own compiled
# library and .venv are not touched.
#
#   PYTHON: a Python 3.12 interpreter (default: python3.12, or pyenv's 3.12)
#   CUDA_HOME (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST (default 9.0)
#   FOCAL_PLUGIN_REHEARSAL_DIR: work folder, kept (default: a temporary one)
#   FOCAL_PLUGIN_WHEEL_CACHE: where the torch wheel is kept between runs
#                             (default ~/.cache/focal_plugin/wheels)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# PyPI's Linux x86_64 torch wheels are the CUDA builds (CUDA 13.0 for 2.14).
TORCH_REQ=torch==2.14.1
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
WORK="${FOCAL_PLUGIN_REHEARSAL_DIR:-$(mktemp -d -t focal_plugin_rehearsal.XXXXXX)}"
CACHE="${FOCAL_PLUGIN_WHEEL_CACHE:-$HOME/.cache/focal_plugin/wheels}/torch-cuda-cp312"

log() { printf '[rehearsal %(%H:%M:%S)T] %s\n' -1 "$*"; }
fail() { echo "rehearse_gpu_check: $*" >&2; exit 1; }

is_312() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2> /dev/null; }
PY312=""
for candidate in "${PYTHON:-}" python3.12 "$(pyenv root 2> /dev/null || echo /nonexistent)"/versions/3.12*/bin/python3.12; do
    if [ -n "$candidate" ] && is_312 "$candidate"; then
        PY312="$candidate"
        break
    fi
done
[ -n "$PY312" ] || fail "no Python 3.12 found: set PYTHON"
[ -x "$CUDA_HOME/bin/nvcc" ] || fail "nvcc not found under CUDA_HOME=$CUDA_HOME"

log "work folder $WORK; Python $("$PY312" -c 'import sys; print(sys.executable)')"
mkdir -p "$WORK" "$CACHE"

# 1. The bare CUDA machine: a venv with the CUDA build of torch and nothing else.
if [ ! -x "$WORK/venv/bin/python" ]; then
    "$PY312" -m venv "$WORK/venv"
fi
VPY="$WORK/venv/bin/python"
if ! ls "$CACHE"/torch-${TORCH_REQ#torch==}-cp312-*x86_64.whl > /dev/null 2>&1; then
    log "downloading $TORCH_REQ for cp312 (about 550 MB) into $CACHE"
    "$VPY" -m pip download -q --no-deps -d "$CACHE" "$TORCH_REQ"
fi
log "installing $TORCH_REQ (CUDA build) and its dependencies into the venv"
"$VPY" -m pip install -q --disable-pip-version-check --find-links "$CACHE" "$TORCH_REQ"
"$VPY" -c 'import torch; assert torch.version.cuda, torch.__version__' ||
    fail "$TORCH_REQ in the venv is not a CUDA build"
for module in pytest hypothesis mmengine numpy; do
    if "$VPY" -c "import $module" 2> /dev/null; then
        fail "the venv should hold only torch, but $module imports"
    fi
done

# 2. The wheels, fetched for the target interpreter by another Python (the
#    machine where pip works is rarely the GPU machine).
log "gpu_check.sh --download"
PYTHON=python3 bash "$ROOT/tools/gpu_check.sh" --download "$WORK/wheels"

# 3. A copy of the checkout (tracked and untracked files, not ignored ones).
rm -rf "$WORK/src"
mkdir -p "$WORK/src"
(cd "$ROOT" && git ls-files -z -c -o --exclude-standard |
    tar --null --ignore-failed-read -T - -cf -) | tar -C "$WORK/src" -xf -
rm -f "$WORK"/src/focal_plugin/_C*.so

run_check() {  # run_check OUT ARGS...: gpu_check.sh as a user of the bare machine runs it
    env -u PYTHONPATH -u VIRTUAL_ENV PYTHON="$VPY" OUT="$1" \
        bash "$WORK/src/tools/gpu_check.sh" "${@:2}"
}

# 4. The preflight stops before the build, with a clear message.
log "preflight without the test tools"
if run_check "$WORK/out_no_wheels" > "$WORK/no_wheels.log" 2>&1; then
    fail "gpu_check.sh passed without pytest and hypothesis"
fi
grep -q 'pytest, hypothesis, pytest_timeout not importable' "$WORK/no_wheels.log" ||
    fail "no clear message without the test tools: $(cat "$WORK/no_wheels.log")"
log "preflight with a CUDA 12 nvcc"
mkdir -p "$WORK/cuda12/bin"
printf '#!/bin/sh\necho "Cuda compilation tools, release 12.4, V12.4.131"\n' \
    > "$WORK/cuda12/bin/nvcc"
chmod +x "$WORK/cuda12/bin/nvcc"
if CUDA_HOME="$WORK/cuda12" run_check "$WORK/out_cuda12" --wheels "$WORK/wheels" \
    > "$WORK/cuda12.log" 2>&1; then
    fail "gpu_check.sh passed with a CUDA 12 nvcc"
fi
grep -q 'nvcc is CUDA 12.4' "$WORK/cuda12.log" ||
    fail "no clear message for the CUDA mismatch: $(cat "$WORK/cuda12.log")"
for out in "$WORK/out_no_wheels" "$WORK/out_cuda12"; do
    [ ! -e "$out/build.log" ] || fail "the preflight failed but $out/build.log exists"
done

# 5. The real run.
log "gpu_check.sh --wheels ... --allow-no-gpu"
run_check "$WORK/out" --wheels "$WORK/wheels" --allow-no-gpu ||
    fail "gpu_check.sh failed (logs in $WORK/out)"

"$PY312" - "$WORK/out" <<'EOF'
import json
import sys

out = sys.argv[1]
with open(f'{out}/summary.json') as f:
    summary = json.load(f)
problems = []
if summary['gpu_visible']:
    problems.append('a GPU is visible: this rehearsal is for a machine without one')
for step in ('build.log', 'kernels.log', 'cpp_errors.log', 'test_cuda.log', 'test_ops.log'):
    if summary['steps'].get(step) != '0':
        problems.append(f'{step}: exit {summary["steps"].get(step)}')
cuda, other = summary['tests'].get('test_cuda', {}), summary['tests'].get('test_ops', {})
if not cuda.get('tests') or cuda.get('skipped') != cuda.get('tests'):
    problems.append(f'GPU tests: expected all collected and skipped, got {cuda}')
if not other.get('tests') or other.get('skipped', 0) >= other['tests'] or \
        other.get('failures') or other.get('errors'):
    problems.append(f'op tests: expected collected and passing, got {other}')
with open(f'{out}/benchmark_cuda.log') as f:
    if 'no GPU is visible' not in f.read():
        problems.append('the benchmark step did not say that there is no GPU')
if problems:
    sys.exit('rehearsal failed:\n  ' + '\n  '.join(problems))
print(f'GPU tests: {cuda["tests"]} collected, all skipped; op tests: {other["tests"]} '
      f'collected, {other["tests"] - other["skipped"]} passed, {other["skipped"]} skipped')
EOF
log "rehearsal passed"
if [ -z "${FOCAL_PLUGIN_REHEARSAL_DIR:-}" ]; then rm -rf "$WORK"; fi
