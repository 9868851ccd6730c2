#!/usr/bin/env bash
# Build MinkowskiEngine 0.5.4 from source (CPU only, OpenBLAS) into a wheel cache outside the
# repository, then install it into a venv. Idempotent: skips every step already done.
#
#   scripts/build_minkowski.sh VENV          (scripts/setup.sh passes the project venv)
#
# Env: XMASK3D_ME_JOBS (parallel compile jobs, default: nproc), XMASK3D_CACHE (see setup.sh).
# ME is an optional reference backend (model.backbone3d.backend: minkowski); the product path is
# the pure-PyTorch backend (torch_native), which needs none of this.
set -euo pipefail

VENV="${1:?usage: build_minkowski.sh VENV}"
PY="${VENV}/bin/python"
CACHE="${XMASK3D_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xmask3d_ros}/wheels"
ME_VERSION="0.5.4"
# ME 0.5.4 does `from collections import Sequence` (removed in Python 3.10).
IMPORT_CHECK='import collections, collections.abc, warnings
warnings.simplefilter("ignore")
collections.Sequence = collections.abc.Sequence
import MinkowskiEngine as ME
print(ME.__version__)'

log() { echo "[build_minkowski] $*"; }

if [[ ! -x "${PY}" ]]; then
    log "no python at ${PY}"; exit 1
fi
if "${PY}" -c "${IMPORT_CHECK}" >/dev/null 2>&1; then
    log "MinkowskiEngine already importable in ${VENV}"; exit 0
fi

# 1. OpenBLAS headers/libs (without --blas=openblas the ME build crashes).
if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
    SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    log "installing libopenblas-dev"
    ${SUDO} apt-get install -y libopenblas-dev || { ${SUDO} apt-get update && ${SUDO} apt-get install -y libopenblas-dev; }
fi

# 2. Wheel into the cache (torch and numpy must already be in the venv: no build isolation).
mkdir -p "${CACHE}"
find_wheel() {  # pip normalises the wheel name to lower case; accept either spelling
    find "${CACHE}" -maxdepth 1 -iname "minkowskiengine-${ME_VERSION}-*.whl" | sort | head -n1
}
WHEEL="$(find_wheel)"
if [[ -z "${WHEEL}" ]]; then
    log "building MinkowskiEngine ${ME_VERSION} wheel into ${CACHE} (several minutes)"
    start=$(date +%s)
    MAX_JOBS="${XMASK3D_ME_JOBS:-$(nproc)}" "${PY}" -m pip wheel --no-build-isolation --no-deps \
        --config-settings="--global-option=--blas=openblas" \
        --config-settings="--global-option=--cpu_only" \
        "MinkowskiEngine==${ME_VERSION}" -w "${CACHE}"
    log "wheel built in $(( $(date +%s) - start )) s"
    WHEEL="$(find_wheel)"
    [[ -n "${WHEEL}" ]] || { log "no wheel found in ${CACHE} after the build"; exit 1; }
fi

# 3. Install (no deps: torch/numpy are pinned by the venv).
log "installing ${WHEEL}"
"${PY}" -m pip install --no-deps "${WHEEL}"
log "MinkowskiEngine $("${PY}" -c "${IMPORT_CHECK}") installed in ${VENV}"
