#!/usr/bin/env bash
# Produces the shipped Arena policy bundle data/pretrained/arena from scratch, with nothing downloaded:
#
#   expert demos (train + held-out seeds) ─▶ detector (pilot train detector, or DETECTOR=<folder>)
#       ─▶ perception of every episode (pilot perceive) ─▶ pilot train policy (training/configs/arena_policy.yaml)
#       ─▶ DAgger: that policy plays, the expert labels every frame (pilot dagger) ─▶ pilot train policy again,
#          the Strategist on demos + DAgger episodes (training/policy.py extra_data_models)
#          (the shipped round-1 episodes were labelled by the expert's hand, session 4; pilot dagger now labels
#          with its plan, arena/expert/labeller.py: the same mode labels, an Executor label that is sound)
#       ─▶ DAgger round 2: that policy plays, the expert's plan labels every frame; all three models fine-tune
#          from it (--init) on the demos + these episodes (the shipped bundle, session 13: on demos 0-15 only)
#       ─▶ the bundle without its runs/ copied into data/pretrained/arena
#
# Usage (from anywhere; every setting is an environment variable with the default shown):
#   bash scripts/make_pretrained.sh                                   # everything (detector included)
#   DETECTOR=data/detectors/arena bash scripts/make_pretrained.sh     # reuse a trained detector folder
#
#   EPISODES=48 HELDOUT=6 EPISODE_SECONDS=120  demo episodes (seeds 0.., held-out seeds 2000..) and their length
#   DAGGER=24                           DAgger episodes a round (seeds 5000..); 0 = none
#   DAGGER_ROUNDS=2                     1 = the Strategist-only round; 2 adds the fine-tuning round
#   WIDTH=640 HEIGHT=360 ZOOM=0.5       capture size; zoom 0.5 at 640x360 shows the 1280x720 world area
#   WORKERS=2 THREADS=1                 demo processes; torch / detector threads
#   WORK=data/make_pretrained           where recordings, the detector and the training runs go
#   TRAIN_DATA=$WORK/recordings/arena-policy HELDOUT_DATA=$WORK/recordings/arena-policy-heldout
#   DAGGER_DATA=$WORK/recordings/arena-dagger DAGGER2_DATA=$WORK/recordings/arena-dagger2
#                                       the episode folders (point them at existing ones to reuse them)
#   OUT=data/pretrained/arena           the shipped bundle
# Every step resumes: complete demo episodes, current perception and finished training are kept, so running
# the command again after an interruption continues where it stopped. Takes about 3.5 h on 2 busy CPU cores
# (perception of 54 two-minute episodes, ~50 s each, three policy trainings and two rounds of DAgger play).
set -euo pipefail
cd "$(dirname "$0")/.."

EPISODES=${EPISODES:-48}
DAGGER=${DAGGER:-24}
DAGGER_ROUNDS=${DAGGER_ROUNDS:-2}
HELDOUT=${HELDOUT:-6}
SECONDS_PER_EPISODE=${EPISODE_SECONDS:-120}
WIDTH=${WIDTH:-640}
HEIGHT=${HEIGHT:-360}
ZOOM=${ZOOM:-0.5}
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-1}
WORK=${WORK:-data/make_pretrained}
OUT=${OUT:-data/pretrained/arena}
CONFIG=${CONFIG:-training/configs/arena_policy.yaml}
PILOT=${PILOT:-.venv/bin/pilot}
export OMP_NUM_THREADS=$THREADS

train_dir=${TRAIN_DATA:-$WORK/recordings/arena-policy}
heldout_dir=${HELDOUT_DATA:-$WORK/recordings/arena-policy-heldout}
dagger_dir=${DAGGER_DATA:-$WORK/recordings/arena-dagger}
dagger2_dir=${DAGGER2_DATA:-$WORK/recordings/arena-dagger2}
demo_args=(--seconds "$SECONDS_PER_EPISODE" --width "$WIDTH" --height "$HEIGHT" --zoom "$ZOOM" --workers "$WORKERS")

echo "== 1/7 expert demos: $EPISODES train + $HELDOUT held-out episodes at ${WIDTH}x${HEIGHT} zoom $ZOOM"
"$PILOT" demos --out "$train_dir" --episodes "$EPISODES" --seed 0 "${demo_args[@]}"
"$PILOT" demos --out "$heldout_dir" --episodes "$HELDOUT" --seed 2000 "${demo_args[@]}"

if [[ -n "${DETECTOR:-}" ]]; then
    echo "== 2/7 detector: using $DETECTOR"
    detector=$DETECTOR
else
    detector=$WORK/detector
    echo "== 2/7 detector: training into $detector"
    "$PILOT" demos --out "$WORK/recordings/arena-detector" --episodes 12 --seconds 60 --seed 0 \
        --width 1280 --height 720 --workers "$WORKERS"
    "$PILOT" train detector --data "$WORK/recordings/arena-detector" --out "$detector" \
        --eval "$heldout_dir" --threads "$THREADS"
fi

echo "== 3/7 perception (the deployed detector + tracker + HUD + state encoder over every frame)"
"$PILOT" perceive --episodes "$heldout_dir" --detector "$detector" --threads "$THREADS"
"$PILOT" perceive --episodes "$train_dir" --detector "$detector" --threads "$THREADS"

echo "== 4/7 pilot train policy ($CONFIG) on the demos"
runs=$WORK/policy
train=("$PILOT" train policy --config "$CONFIG" --data.data "$train_dir" --data.val-data "$heldout_dir"
    --detector "$detector" --threads "$THREADS" --resume)
"${train[@]}" --out "$runs"

if (( DAGGER > 0 )); then
    echo "== 5/7 DAgger: the policy plays $DAGGER episodes, the expert labels every frame it reaches"
    "$PILOT" dagger --policy "$runs" --out "$dagger_dir" --episodes "$DAGGER" --seed 5000 "${demo_args[@]}" \
        --threads "$THREADS"
    echo "== 6/7 pilot train policy again: the Strategist also learns the expert's modes on the DAgger episodes"
    runs=$WORK/policy-dagger
    "${train[@]}" --data.extra-data "$dagger_dir" --out "$runs"
fi

if (( DAGGER > 0 && DAGGER_ROUNDS > 1 )); then
    echo "== 6b/7 DAgger round 2: $DAGGER episodes labelled by the expert's plan; all three models fine-tune"
    "$PILOT" dagger --policy "$runs" --out "$dagger2_dir" --episodes "$DAGGER" --seed 5000 "${demo_args[@]}" \
        --threads "$THREADS"
    init=$runs
    runs=$WORK/policy-dagger2
    "${train[@]}" --init "$init" --data.extra-data "$dagger2_dir" \
        --extra-data-models strategist tactician executor --out "$runs"
fi

echo "== 7/7 bundle -> $OUT (without runs/)"
rm -rf "$OUT.tmp"
mkdir -p "$(dirname "$OUT")"
cp -r "$runs" "$OUT.tmp"
# the ONNX detector only (ONNX Runtime is the live runtime): best.pt would add 5 MB of pickle
rm -rf "$OUT.tmp/runs" "$OUT.tmp/detector/train" "$OUT.tmp/detector/dataset" "$OUT.tmp/detector/best.pt"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
du -sh "$OUT"
echo "done: $OUT (check it with: $PILOT eval --policy $OUT --episodes 3 --seconds 60)"
