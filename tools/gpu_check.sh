#!/usr/bin/env bash
# focal_plugin's GPU checks in one run, for a CUDA machine that has Python,
# a CUDA build of PyTorch and nvcc, and nothing else (no mmengine, no pytest):
#   0. with --wheels DIR: installs the test tools from DIR into a throwaway
#      folder (the machine's own Python environment is not changed);
#   1. preflight, before any time goes into the build: torch is a CUDA build,
#      pytest and hypothesis import, nvcc's CUDA major version is torch's, a
#      C++ compiler exists, and whether a GPU is visible;
#   2. builds the extension in place (FORCE_CUDA=1, for the visible GPU's
#      architecture), checks that every op has a CUDA kernel and that an
#      error the C++ side raises reaches Python as an exception;
#   3. runs the GPU test files (tests/test_ops/test_*cuda.py) on their own
#      first, so that a problem elsewhere can not hide them, then the rest of
#      tests/test_ops;
#   4. runs the GPU benchmark (tools/benchmark_focal_loss.py --device cuda),
#      and tools/benchmark_training_step.py --device cuda where mmdet and mmcv
#      with its CUDA ops are installed.
#   5. runs every kernel once under compute-sanitizer's memcheck and racecheck
#      (tools/cuda_memcheck.py), where the sanitizer is installed.
# Logs, JUnit XML, the benchmark's JSON and summary.json go to $OUT (default
# work_dirs/gpu_check). A failed step does not stop the later ones; the exit
# status is that of the first failed step.
#
# Without a visible GPU the build and the tests still run (the GPU tests
# skip) and the benchmark step says that it did not run; the exit status is
# then 4, so that a GPU check never passes without a GPU, unless
# --allow-no-gpu is given (for rehearsing the script on a CPU-only machine).
#
# Usage:
#   bash tools/gpu_check.sh --download DIR [--python-version 3.12] [--platform TAG]...
#        where pip can reach an index: fetches what the op tests need beyond
#        torch (requirements/tests.txt, and ninja from requirements/build.txt,
#        with their dependencies) for the target interpreter: CPython 3.12 on
#        x86_64 Linux (glibc >= 2.28, as torch's own wheels) unless told
#        otherwise. Most of them are pure Python; ninja is not, hence the target.
#   bash tools/gpu_check.sh [--wheels DIR] [--allow-no-gpu]
#        on the GPU machine.
#
# PYTHON picks the interpreter (default python3); CUDA_HOME the toolkit
# (default: /usr/local/cuda, else the one nvcc on PATH belongs to);
# TORCH_CUDA_ARCH_LIST the architectures (default: the visible GPU's, else
# 9.0); PYTEST_ARGS adds pytest arguments (e.g. "-x").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/work_dirs/gpu_check}"

log() { printf '[gpu-check %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { echo "gpu_check: $*" >&2; exit "${2:-1}"; }
usage() {
    cat >&2 <<'EOF'
usage: bash tools/gpu_check.sh --download DIR [--python-version X.Y] [--platform TAG]...
       bash tools/gpu_check.sh [--wheels DIR] [--allow-no-gpu]
EOF
    exit 2
}

# requirements FILE [NAME]: the requirement lines of requirements/FILE (or the
# one for package NAME), so that every version pin has one home.
requirements() {
    local file="$ROOT/requirements/$1" name="${2:-}"
    [ -f "$file" ] || die "$file is missing"
    sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$file" | grep -v '^$' |
        grep -v '^-r' | if [ -n "$name" ]; then
            grep -i -E "^${name}([<>=!~;[ ]|$)" || die "requirements/$1 has no line for $name"
        else
            cat
        fi
}
needed_requirements() {
    requirements tests.txt
    requirements build.txt ninja  # torch builds the extension in parallel with it
}

mode=run wheels="" dir="" allow_no_gpu=0
# pip takes a wheel only if one of its platform tags is listed: manylinux_2_28
# is torch's own (so the GPU machine has glibc >= 2.28), the older tags are
# what most small compiled wheels carry.
target_python=3.12 platforms=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
platform_given=0
while [ $# -gt 0 ]; do
    case "$1" in
        --download) [ -n "${2:-}" ] || usage; mode=download; dir="$2"; shift 2 ;;
        --python-version) [ -n "${2:-}" ] || usage; target_python="$2"; shift 2 ;;
        --platform)  # repeatable; replaces the default list
            [ -n "${2:-}" ] || usage
            [ "$platform_given" -eq 1 ] || platforms=()
            platform_given=1 platforms+=("$2")
            shift 2
            ;;
        --wheels)
            [ -n "${2:-}" ] || usage
            [ -d "$2" ] || die "--wheels $2 is not a folder" 2
            wheels="$(cd "$2" && pwd)"
            shift 2
            ;;
        --allow-no-gpu) allow_no_gpu=1; shift ;;
        *) usage ;;
    esac
done

if [ "$mode" = download ]; then
    mapfile -t reqs < <(needed_requirements)
    [ "${#reqs[@]}" -gt 0 ] || die "no requirements read from requirements/"
    mkdir -p "$dir"
    log "downloading ${reqs[*]} (with dependencies) for CPython $target_python on" \
        "${platforms[*]} into $dir"
    "$PYTHON" -m pip download -q -d "$dir" --only-binary=:all: --implementation cp \
        --python-version "$target_python" "${platforms[@]/#/--platform=}" "${reqs[@]}" ||
        die "pip download failed (see above)"
    log "$(ls "$dir"/*.whl | wc -l) wheels in $dir; on the GPU machine run:" \
        "bash tools/gpu_check.sh --wheels $dir"
    exit 0
fi

mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ -n "$wheels" ]; then
    mapfile -t reqs < <(needed_requirements)
    [ "${#reqs[@]}" -gt 0 ] || die "no requirements read from requirements/"
    site="$(mktemp -d -t focal_plugin_site.XXXXXX)"
    log "installing ${reqs[*]} from $wheels into $site"
    if "$PYTHON" -m pip --version > /dev/null 2>&1; then
        "$PYTHON" -m pip install -q --no-index --find-links "$wheels" --no-compile \
            --no-cache-dir --target "$site" "${reqs[@]}" ||
            die "installing from $wheels failed: were they downloaded for this Python" \
                "($("$PYTHON" -c 'import platform; print(platform.python_version())'))?"
    else
        # No pip: a wheel is a zip archive of its importable files.
        log "no pip for $PYTHON: unpacking the wheels"
        "$PYTHON" -c 'import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])' "$site" "$wheels"/*.whl || exit 1
        [ -d "$site/ninja/data/bin" ] && chmod +x "$site"/ninja/data/bin/* &&
            export PATH="$site/ninja/data/bin:$PATH"
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$site/bin:$PATH"  # ninja's executable, which torch's build looks for
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# --------------------------------------------------------------------------
# 1. Preflight
# --------------------------------------------------------------------------
log "preflight"
if [ -z "${CUDA_HOME:-}" ]; then
    # The toolkit's folder, not that of a symlink to nvcc (e.g. /usr/local/bin).
    if [ -x /usr/local/cuda/bin/nvcc ]; then
        CUDA_HOME=/usr/local/cuda
    elif command -v nvcc > /dev/null; then
        CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
    else
        die "nvcc not found (neither /usr/local/cuda/bin/nvcc nor on PATH): set CUDA_HOME"
    fi
fi
export CUDA_HOME
[ -x "$CUDA_HOME/bin/nvcc" ] || die "CUDA_HOME=$CUDA_HOME has no bin/nvcc"
nvcc_cuda="$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p')"
[ -n "$nvcc_cuda" ] || die "could not read the CUDA version from $CUDA_HOME/bin/nvcc --version"
command -v "${CXX:-c++}" > /dev/null || die "no C++ compiler (${CXX:-c++}) on PATH"

"$PYTHON" - "$nvcc_cuda" "$CUDA_HOME" > "$OUT/machine.txt" 2> "$OUT/preflight.log" <<'EOF'
import importlib
import platform
import sys

nvcc_cuda, cuda_home = sys.argv[1:]
try:
    import torch
except ImportError as err:
    sys.exit(f'{sys.executable} can not import torch ({err}): install a CUDA build of PyTorch')
print(f'python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, '
      f'torch CUDA {torch.version.cuda}, nvcc CUDA {nvcc_cuda} ({cuda_home}), '
      f'{torch.get_num_threads()} CPU threads')
if torch.version.cuda is None:
    sys.exit(f'torch {torch.__version__} is a CPU build: the GPU check needs a CUDA build')
if nvcc_cuda.split('.')[0] != torch.version.cuda.split('.')[0]:
    sys.exit(f'nvcc is CUDA {nvcc_cuda} ({cuda_home}) but torch {torch.__version__} was built '
             f'with CUDA {torch.version.cuda}; torch builds extensions only with a toolkit of '
             f'the same major version: set CUDA_HOME to a CUDA '
             f'{torch.version.cuda.split(".")[0]}.x toolkit or install the matching torch')
missing = []
for module in ('pytest', 'hypothesis', 'pytest_timeout'):
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(module)
if missing:
    sys.exit(f'{", ".join(missing)} not importable: run `bash tools/gpu_check.sh --download DIR` '
             'where pip can reach an index, then `bash tools/gpu_check.sh --wheels DIR` here')
count = torch.cuda.device_count() if torch.cuda.is_available() else 0
for i in range(count):
    p = torch.cuda.get_device_properties(i)
    print(f'GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, '
          f'{p.multi_processor_count} SMs')
if count == 0:
    print('GPU: none visible')
EOF
rc=$?
# The compiler torch's extension build calls: an extension whose unwind tables
# the process's unwinder misreads crashes on its first C++ error (see the
# check after the build).
cxx="${CXX:-c++}"
echo "C++ compiler: $(command -v "$cxx") ($("$cxx" --version 2>&1 | head -n 1))" >> "$OUT/machine.txt"
cat "$OUT/machine.txt"
if [ "$rc" -ne 0 ]; then
    cat "$OUT/preflight.log" >&2
    die "preflight failed; nothing was built"
fi
if grep -q '^GPU: none visible' "$OUT/machine.txt"; then
    gpu=0
    log "NO GPU IS VISIBLE (torch.cuda.is_available() is False): the build and the op tests" \
        "run, the GPU tests skip and the GPU benchmark does not run"
else
    gpu=1
fi
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST="$("$PYTHON" -c 'import torch
print("%d.%d" % torch.cuda.get_device_capability() if torch.cuda.is_available() else "9.0")')"
    export TORCH_CUDA_ARCH_LIST
fi

# --------------------------------------------------------------------------
# 2-4. Build, tests, benchmark
# --------------------------------------------------------------------------
status=0
results=()
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
    results+=("$logfile=$rc")
}

cd "$ROOT"
CUDA_TESTS=(tests/test_ops/test_*cuda.py)
rm -f focal_plugin/_C*.so
step "building the extension (FORCE_CUDA=1, arch $TORCH_CUDA_ARCH_LIST, CUDA_HOME=$CUDA_HOME)" \
    build.log env FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PYTHON" setup.py -q \
    build_ext --inplace
step "checking that every op has a CUDA kernel" kernels.log "$PYTHON" -c '
import sys
import torch
from focal_plugin import ops
assert ops.is_loaded(), "the extension did not load"
# Every op of the library except the CPU output cache ones, which have no device.
names = sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names()
               if n.startswith("focal_plugin::") and "cpu_cache" not in n)
missing = [(n, key) for n in names for key in ("CPU", "CUDA")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"focal_plugin::{n}", key)]
print(f"kernels registered: {2 * len(names) - len(missing)}/{2 * len(names)} ({len(names)} ops; "
      f"CPU kernels: {ops.cpu_isa()})")
if missing or not names:
    sys.exit(f"missing kernels: {missing or names}")'
# A bad argument that only the C++ side checks (the private training op's
# grad_scale): it must arrive in Python as a ValueError, on every device.
step "C++ errors reach Python as exceptions" cpp_errors.log "$PYTHON" -c '
import torch
import focal_plugin.ops  # noqa: F401 (loads and registers the ops)
for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
    pred, target = torch.zeros(4, 3, device=device), torch.zeros(4, 3, device=device)
    try:
        torch.ops.focal_plugin._quality_focal_loss_with_grad(
            pred, target, None, None, None, -2**63, 2.0, False, True, float("nan"))
    except ValueError as err:
        print(f"{device}: ValueError: {str(err).splitlines()[0]}")
    else:
        raise SystemExit(f"{device}: grad_scale=nan was accepted")'
if [ "${results[-1]##*=}" -gt 128 ] 2> /dev/null; then
    log "a C++ error crashed the process (signal $(( ${results[-1]##*=} - 128 ))) instead of" \
        "raising. A known cause (pytorch/pytorch#117645): c10 records a backtrace for every" \
        "error, and the process's unwinder misreads the unwind tables of a library built by" \
        "another toolchain (here $(command -v "$cxx")): try the compiler torch was built with."
fi
step "GPU tests (${CUDA_TESTS[*]}, on their own)" test_cuda.log \
    "$PYTHON" -m pytest "${CUDA_TESTS[@]}" -q -rs --junitxml="$OUT/test_cuda.xml" ${PYTEST_ARGS:-}
step "the other op tests (tests/test_ops)" test_ops.log \
    "$PYTHON" -m pytest tests/test_ops -q "${CUDA_TESTS[@]/#/--ignore=}" \
    --junitxml="$OUT/test_ops.xml" ${PYTEST_ARGS:-}
if [ "$gpu" -eq 1 ]; then
    step "GPU benchmark" benchmark_cuda.log \
        "$PYTHON" tools/benchmark_focal_loss.py --device cuda --repeat 20 \
        --out "$OUT/benchmark_cuda.json"
    # Whole training steps need mmdet and mmcv built with its CUDA ops (stock
    # RetinaNet calls mmcv's focal-loss kernel), which a bare CUDA machine
    # lacks: run them where they are installed.
    if "$PYTHON" -c 'import mmdet
from mmcv.ops import get_compiling_cuda_version
assert get_compiling_cuda_version() != "not available"' 2> /dev/null; then
        step "GPU whole-step benchmark" benchmark_training_step_cuda.log \
            "$PYTHON" tools/benchmark_training_step.py --device cuda \
            --out "$OUT/benchmark_training_step_cuda.json"
    else
        log "GPU whole-step benchmark: NOT RUN, mmdet with mmcv's CUDA ops is not installed" |
            tee "$OUT/benchmark_training_step_cuda.log"
        results+=("benchmark_training_step_cuda.log=not run: no mmdet")
    fi
    # Every kernel once under NVIDIA's compute-sanitizer: out-of-bounds or
    # misaligned accesses (memcheck) and shared-memory races (racecheck). Each
    # tensor its own cudaMalloc: inside the caching allocator's larger blocks an
    # access past a tensor's end would not be out of bounds for the sanitizer.
    sanitizer="$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")"
    if [ -x "$sanitizer" ]; then
        for tool in memcheck racecheck; do
            step "compute-sanitizer --tool $tool (tools/cuda_memcheck.py)" "sanitizer_$tool.log" \
                env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool "$tool" \
                --error-exitcode 9 "$PYTHON" tools/cuda_memcheck.py
        done
    else
        log "compute-sanitizer: NOT RUN, not found (on PATH or in $CUDA_HOME/bin)" |
            tee "$OUT/sanitizer_memcheck.log"
        results+=("sanitizer_memcheck.log=not run: no compute-sanitizer")
    fi
else
    log "GPU benchmark: NOT RUN, no GPU is visible" | tee "$OUT/benchmark_cuda.log"
    results+=("benchmark_cuda.log=not run: no GPU")
    if [ "$allow_no_gpu" -eq 0 ] && [ "$status" -eq 0 ]; then
        status=4
    fi
fi

"$PYTHON" - "$OUT" "$status" "$gpu" "${results[@]}" <<'EOF'
import json
import os
import sys
import xml.etree.ElementTree as ET

out, status, gpu, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1', sys.argv[4:]
summary = {'exit_status': status, 'gpu_visible': gpu,
           'steps': dict(s.split('=', 1) for s in steps), 'tests': {}}
for name in ('test_cuda', 'test_ops'):
    path = os.path.join(out, f'{name}.xml')
    if os.path.exists(path):
        suite = ET.parse(path).getroot()
        suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
        summary['tests'][name] = {k: int(suite.get(k, 0))
                                  for k in ('tests', 'failures', 'errors', 'skipped')}
with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
print(json.dumps(summary))
EOF
if [ "$gpu" -eq 0 ]; then
    log "no GPU was visible: the GPU tests were skipped and the benchmark was not run"
fi
log "done (exit $status); logs in $OUT"
exit "$status"
