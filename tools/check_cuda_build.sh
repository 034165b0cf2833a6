#!/usr/bin/env bash
# Proves that the CUDA kernel compiles and links on a machine with nvcc but no
# GPU: builds focal_plugin's extension with FORCE_CUDA=1 against the CUDA build
# of torch 2.14.1 (C++20) in a throwaway venv, loads it, and checks that every
# op has a CUDA kernel registered. The project's own .venv is not touched.
#
#   CUDA_HOME (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST (default 9.0)
#   FOCAL_PLUGIN_CUDA_CHECK_DIR: work folder (default: a fresh temporary one)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
WORK="${FOCAL_PLUGIN_CUDA_CHECK_DIR:-$(mktemp -d -t focal_plugin_cuda.XXXXXX)}"
PY_BOOT="${PYTHON:-$(command -v python3.11 || command -v python3)}"

log() { printf '[cuda-check %(%H:%M:%S)T] %s\n' -1 "$*"; }

if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "check_cuda_build: nvcc not found under CUDA_HOME=$CUDA_HOME" >&2
    exit 1
fi
log "nvcc: $("$CUDA_HOME/bin/nvcc" --version | tail -n 2 | head -n 1)"

if [ ! -x "$WORK/venv/bin/python" ]; then
    log "creating throwaway venv in $WORK/venv with torch==2.14.1 (CUDA build)"
    "$PY_BOOT" -m venv "$WORK/venv"
fi
# The build tools (setuptools' pin, numpy's bound) come from requirements/build.txt,
# the one place they are written; torch is deliberately another version, a CUDA build.
mapfile -t BUILD_TOOLS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^torch[=<>!~]/d' \
    -e '/^$/d' "$ROOT/requirements/build.txt")
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check \
    torch==2.14.1 "${BUILD_TOOLS[@]}"

log "building the extension with FORCE_CUDA=1 (arch $TORCH_CUDA_ARCH_LIST)"
# Build out of tree so the project's own compiled library stays as it is.
cp -r "$ROOT/setup.py" "$ROOT/README.md" "$ROOT/requirements" "$ROOT/focal_plugin" "$WORK/"
rm -f "$WORK"/focal_plugin/_C*.so
(cd "$WORK" && FORCE_CUDA=1 "$WORK/venv/bin/python" setup.py -q build_ext \
    --build-lib "$WORK/build_lib" --build-temp "$WORK/build_temp")

so=$(ls "$WORK"/build_lib/focal_plugin/_C*.so)
log "built $so; loading it and checking the CUDA registrations"
"$WORK/venv/bin/python" - "$so" <<'EOF2'
import sys
import torch
torch.ops.load_library(sys.argv[1])
# Every op of the library except the CPU output cache's, which have no device.
ops = sorted(name.split('::')[1] for name in torch._C._dispatch_get_all_op_names()
             if name.startswith('focal_plugin::') and 'cpu_cache' not in name)
missing = [(op, key) for op in ops for key in ('CPU', 'CUDA')
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f'focal_plugin::{op}', key)]
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}); '
      f'kernels registered: {len(ops) * 2 - len(missing)}/{len(ops) * 2} ({len(ops)} ops)')
if missing:
    sys.exit(f'missing kernels: {missing}')
EOF2
log "CUDA build check passed"
if [ -z "${FOCAL_PLUGIN_CUDA_CHECK_DIR:-}" ]; then rm -rf "$WORK"; fi
