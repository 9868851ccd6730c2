#!/usr/bin/env bash
# The end-to-end demo: a synthetic room the model never saw -> rosbag2 -> replay through the full
# pipeline with the project's demo XMask3D checkpoint -> metrics table and pictures.
#
#   bash scripts/demo.sh
#
# Steps (each timed): scripts/setup.sh (idempotent; seconds when done already), source
# scripts/env.sh, xmask3d-synth (one room as a rosbag2 + its .gt.npz ground truth), xmask3d-replay
# --segmenter xmask3d with every class name of the synthetic B15/N4 partition as the vocabulary
# (the checkpoint's vocabulary.yaml says which are novel, i.e. never labelled in training).
#
# Environment knobs:
#   XMASK3D_DEMO_CHECKPOINT  checkpoint folder instead of the committed models/demo
#   XMASK3D_DEMO_OUT         output folder (default outputs/demo)
#   XMASK3D_DEMO_SKIP_SETUP=1  skip setup.sh and env.sh: use the xmask3d-* commands already on
#                              PATH (a developer's activated environment)
set -euo pipefail

SEED=7000        # room seed: outside the demo training (1000-1999) and validation (5000-5099) seeds
FRAMES=400       # 40 s at 10 fps: about one loop around the room
WIDTH=320
HEIGHT=240
PARTITION=synthetic_B15N4
OVERLAYS=4

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${XMASK3D_DEMO_OUT:-outputs/demo}
BAG="$OUT/synth/bags/scene0000_00"
RUN="$OUT/replay"

log() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }
t_all=$(date +%s)
step_start=0
step() { step_start=$(date +%s); log "$*"; }
done_step() { log "  done in $(( $(date +%s) - step_start )) s"; }

if [ "${XMASK3D_DEMO_SKIP_SETUP:-0}" != 1 ]; then
  step "1/4 setup (scripts/setup.sh, idempotent)"
  bash "$ROOT/scripts/setup.sh"
  done_step
  # shellcheck source=scripts/env.sh
  source "$ROOT/scripts/env.sh"
else
  log "1/4 setup skipped (XMASK3D_DEMO_SKIP_SETUP=1)"
fi

CHECKPOINT_ARGS=()
if [ -n "${XMASK3D_DEMO_CHECKPOINT:-}" ]; then
  CHECKPOINT_ARGS=(--checkpoint "$XMASK3D_DEMO_CHECKPOINT")
fi

step "2/4 synthetic room (seed $SEED, $FRAMES frames ${WIDTH}x${HEIGHT}) -> $BAG"
rm -rf "$OUT/synth"
xmask3d-synth --scenes 1 --seed "$SEED" --frames "$FRAMES" --width "$WIDTH" --height "$HEIGHT" \
  --format bag --out "$OUT/synth" --quiet
done_step

LABELS=$(python -c "
from xmask3d_ros.data.partitions import get_partition
p = get_partition('$PARTITION')
print(','.join(list(p.base) + list(p.novel)))")

step "3/4 replay with XMask3D (${XMASK3D_DEMO_CHECKPOINT:-the demo checkpoint models/demo}) -> $RUN"
rm -rf "$RUN"
xmask3d-replay "$BAG" --segmenter xmask3d "${CHECKPOINT_ARGS[@]}" --labels "$LABELS" \
  --gt "$BAG.gt.npz" --overlays "$OVERLAYS" --out "$RUN" --quiet
done_step

step "4/4 results"
echo
cat "$RUN/metrics.md"
echo
log "pictures:"
for f in "$RUN/topdown.png" "$RUN/topdown_gt.png" "$RUN"/overlays/*.png; do
  if [ -e "$f" ]; then echo "  $f"; fi
done
log "map: $RUN/map.ply   bag (semantic cloud + TF, for RViz): $RUN/semantic_map.mcap"
log "report: $RUN/report.json"
log "demo finished in $(( $(date +%s) - t_all )) s"
