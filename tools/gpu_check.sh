#!/usr/bin/env bash
# focal_plugin's GPU checks in one run, for a CUDA machine that has PyTorch and
# nvcc but not this project's .venv (a lent GPU machine, a cluster node):
#   1. makes mmengine importable (focal_plugin needs it; mmcv and mmdet are
#      optional) from a folder of wheels, if one is given;
#   2. builds the extension in place with that machine's torch and nvcc
#      (FORCE_CUDA=1, for the visible GPU's architecture);
#   3. runs the op tests, the GPU tests (tests/test_ops/test_focal_loss_cuda.py)
#      among them;
#   4. runs the GPU benchmark (tools/benchmark_focal_loss.py --device cuda).
# Logs and the benchmark's JSON go to $OUT (default work_dirs/gpu_check). The
# exit status is that of the first step that failed; later steps still run.
#
# Usage:
#   bash tools/gpu_check.sh --download .whl   # where pip works: fetch the wheels
#   bash tools/gpu_check.sh --wheels .whl     # on the GPU machine
#
# The wheels are pure Python (mmengine 0.10.7 and its small dependencies), so
# one download serves any Python 3 machine. PYTHON picks the interpreter
# (default python3); PYTEST_ARGS adds pytest arguments (e.g. "-x").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/work_dirs/gpu_check}"
# Beyond what a CUDA PyTorch image has: mmengine and its dependencies.
WHEELS_NEEDED=(mmengine==0.10.7 addict termcolor yapf platformdirs)

log() { printf '[gpu-check %(%H:%M:%S)T] %s\n' -1 "$*"; }
usage() {
    echo "usage: bash tools/gpu_check.sh [--wheels DIR] | --download DIR" >&2
    exit 2
}

wheels=""
case "${1:-}" in
    --download)
        [ -n "${2:-}" ] || usage
        mkdir -p "$2"
        exec "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$2" \
            "${WHEELS_NEEDED[@]}"
        ;;
    --wheels)
        [ -n "${2:-}" ] || usage
        [ -d "$2" ] || { echo "gpu_check: --wheels $2 is not a folder" >&2; exit 2; }
        wheels="$2"
        ;;
    "") ;;
    *) usage ;;
esac

mkdir -p "$OUT"
status=0
step() {  # step NAME LOGFILE COMMAND...: runs COMMAND, keeps the first failure
    local name="$1" logfile="$2"
    shift 2
    log "$name"
    "$@" 2>&1 | tee "$OUT/$logfile"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        log "$name FAILED (exit $rc; log: $OUT/$logfile)"
        [ "$status" -ne 0 ] || status=$rc
    fi
}

if [ -n "$wheels" ]; then
    site="$(mktemp -d -t focal_plugin_site.XXXXXX)"
    log "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site" "$wheels"/*.whl || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PYTHON" - <<'EOF' | tee "$OUT/machine.txt"
import platform
import torch
print(f'python {platform.python_version()}, torch {torch.__version__}, '
      f'CUDA {torch.version.cuda}, {torch.get_num_threads()} CPU threads')
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f'GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, '
          f'{p.multi_processor_count} SMs')
EOF
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST="$("$PYTHON" -c 'import torch
print("%d.%d" % torch.cuda.get_device_capability() if torch.cuda.is_available() else "9.0")')"
    export TORCH_CUDA_ARCH_LIST
fi
if [ -z "${CUDA_HOME:-}" ]; then
    # The toolkit's folder, not that of a symlink to nvcc (e.g. /usr/local/bin).
    if [ -x /usr/local/cuda/bin/nvcc ]; then
        CUDA_HOME=/usr/local/cuda
    elif command -v nvcc > /dev/null; then
        CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
    else
        echo "gpu_check: nvcc not found; set CUDA_HOME" >&2
        exit 1
    fi
    export CUDA_HOME
fi

cd "$ROOT"
rm -f focal_plugin/_C*.so
step "building the extension (FORCE_CUDA=1, arch $TORCH_CUDA_ARCH_LIST, CUDA_HOME=$CUDA_HOME)" \
    build.log env FORCE_CUDA=1 MAX_JOBS="$(nproc)" "$PYTHON" setup.py -q build_ext --inplace
step "op tests (GPU tests included)" test_ops.log \
    "$PYTHON" -m pytest tests/test_ops -q -p no:cacheprovider ${PYTEST_ARGS:-}
step "GPU benchmark" benchmark_cuda.log \
    "$PYTHON" tools/benchmark_focal_loss.py --device cuda --out "$OUT/benchmark_cuda.json"
log "done (exit $status); logs in $OUT"
exit "$status"
