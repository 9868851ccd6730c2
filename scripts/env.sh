# Source me: puts this checkout's venv and colcon install space on the environment.
#   source scripts/env.sh
_xmask3d_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
XMASK3D_ROOT="$_xmask3d_root"
# shellcheck source=scripts/paths.sh
source "$_xmask3d_root/scripts/paths.sh"
if [ ! -f "$_xmask3d_root/install/setup.bash" ]; then
  echo "xmask3d_ros: not built yet; run scripts/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
export VIRTUAL_ENV="$XMASK3D_VENV"
export PATH="$XMASK3D_VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$XMASK3D_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# colcon's setup scripts reference unset variables; relax nounset around them.
case $- in *u*) _xmask3d_nounset=1; set +u;; *) _xmask3d_nounset=0;; esac
# shellcheck disable=SC1091
source "$_xmask3d_root/install/setup.bash"
[ "$_xmask3d_nounset" = 1 ] && set -u
# Keep DDS discovery on this machine unless the caller chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _xmask3d_root _xmask3d_nounset
