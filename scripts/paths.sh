# Sourced by the other scripts (with XMASK3D_ROOT set): where the venv and caches live.
: "${XMASK3D_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/xmask3d_ros}"
if [ -z "${XMASK3D_VENV:-}" ]; then
  # One venv per checkout, named after its path, so clones never share (or break) each other's.
  XMASK3D_VENV="$XMASK3D_CACHE/venvs/$(basename "$XMASK3D_ROOT")-$(printf "%s" "$XMASK3D_ROOT" | sha256sum | cut -c1-10)"
fi
export XMASK3D_CACHE XMASK3D_VENV
