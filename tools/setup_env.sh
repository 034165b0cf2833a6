#!/usr/bin/env bash
# Creates (or brings up to date) the project-local virtual environment .venv with
# the pinned OpenMMLab stack and focal_plugin installed in editable mode.
#
# Idempotent: every step is skipped when what it installs is already there, so
# a second run on the same machine takes seconds. Safe on a brand-new machine:
# everything is installed from the package registry and the local torch wheel.
#
# Environment:
#   PYTHON                      interpreter for the venv (default: python3.11 or python3)
#   FOCAL_PLUGIN_VENV           venv folder (default: <repo>/.venv)
#   FOCAL_PLUGIN_WHEEL_CACHE    where the mmcv wheel built from source is kept
#                               (default: ~/.cache/focal_plugin/wheels)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FOCAL_PLUGIN_VENV:-$ROOT/.venv}"
PY_BOOT="${PYTHON:-$(command -v python3.11 || command -v python3)}"
REQ="$ROOT/requirements"

# The version pinned as `NAME==VERSION` in one requirements file: every pinned
# version is written once, in requirements/*.txt, and read from there.
pinned() {
    local version
    version=$(sed -n "s/^$1==\([^ #;]*\).*/\1/p" "$REQ/$2")
    [ -n "$version" ] || { echo "no $1==VERSION line in requirements/$2" >&2; exit 1; }
    echo "$version"
}
TORCH_VERSION=$(pinned torch build.txt)
MMCV_VERSION=$(pinned mmcv mminstall.txt)
# The rest of the pinned OpenMMLab stack (mmengine, mmdet, mmsegmentation): every
# requirement of mminstall.txt but mmcv, which is built from source below.
mapfile -t MM_PINNED < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^mmcv==/d' -e '/^$/d' \
    "$REQ/mminstall.txt")

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
"$PY" - <<'EOF'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f'focal_plugin setup expects Python 3.11, the venv has {sys.version.split()[0]}')
EOF

# A stamp keyed by the content of every requirement file lets the common case
# (nothing changed) skip pip entirely.
req_hash=$(cat "$REQ"/*.txt "$ROOT/setup.py" | sha256sum | cut -c1-16)
stamp="$VENV/.focal_plugin_requirements.$req_hash"

if [ ! -f "$stamp" ]; then
    log "installing build requirements (torch==$TORCH_VERSION from local disk)"
    "${PIP[@]}" install -q -r "$REQ/build.txt"
fi

# mmcv (its pin: mminstall.txt) has no wheel for this torch: build it from source with its ops.
# pip's own wheel cache is keyed by the sdist, not by torch, so it could hand back
# a wheel built against another torch (wrong ABI); keep our own cache, keyed by
# the Python and torch versions, and bypass pip's.
mmcv_ok() {
    "$PY" - <<EOF 2>/dev/null
import mmcv, torch
from mmcv.ops import nms  # the compiled ops must load against this torch
assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__
assert torch.__version__.split('+')[0] == '$TORCH_VERSION', torch.__version__
EOF
}
if ! mmcv_ok; then
    cache="${FOCAL_PLUGIN_WHEEL_CACHE:-$HOME/.cache/focal_plugin/wheels}/cp311-torch$TORCH_VERSION"
    mkdir -p "$cache"
    wheel=$(ls "$cache"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
        log "building mmcv==$MMCV_VERSION with ops from source (about 7 minutes on 2 cores)"
        MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel \
            --no-build-isolation --no-deps --no-cache-dir --no-binary mmcv \
            -w "$cache" "mmcv==$MMCV_VERSION"
        wheel=$(ls "$cache"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
    else
        log "reusing mmcv wheel $wheel"
    fi
    "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel"
fi

if [ ! -f "$stamp" ]; then
    log "installing ${MM_PINNED[*]} and their dependencies, and the test requirements"
    # -c build.txt: nothing here may move torch or numpy off their pins.
    "${PIP[@]}" install -q -r "$REQ/openmmlab_deps.txt" -r "$REQ/tests.txt" -c "$REQ/build.txt"
    "${PIP[@]}" install -q --no-deps "${MM_PINNED[@]}"
fi

# The editable install compiles the C++ extension; rebuild it when its sources change.
src_hash=$(cat "$ROOT"/setup.py $(find "$ROOT/focal_plugin/csrc" -type f | sort) | sha256sum | cut -c1-16)
ext_stamp="$VENV/.focal_plugin_extension.$src_hash"
if [ ! -f "$ext_stamp" ] || [ ! -f "$stamp" ]; then
    log "building and installing focal_plugin (editable) with its C++ extension"
    (cd "$ROOT" && MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" install -q --no-build-isolation --use-pep517 --no-deps -e .)
    rm -f "$VENV"/.focal_plugin_extension.*
    touch "$ext_stamp"
fi

rm -f "$VENV"/.focal_plugin_requirements.*
"$PY" -c "import focal_plugin; print('focal_plugin', focal_plugin.__version__, 'ready in', '$VENV')"
touch "$stamp"
