#!/usr/bin/env bash
# Produces the shipped Naev policy bundle data/pretrained/naev from scratch, with nothing downloaded; the
# Naev sibling of scripts/make_pretrained.sh (the real game, Debian's naev, on private Xvfb displays):
#
#   scripted-pilot demos (train + held-out seeds, 1280x720, probe ground truth) ─▶ detector trained on the
#       train demos' probe boxes (pilot train detector --profile naev), scored on the held-out ones
#       ─▶ perception of every episode (pilot perceive) ─▶ pilot train policy (training/configs/naev_policy.yaml)
#       ─▶ the bundle without its runs/ copied into data/pretrained/naev
#
# Usage (from anywhere; every setting is an environment variable with the default shown):
#   bash scripts/make_pretrained_naev.sh
#   DETECTOR=data/naev/detector bash scripts/make_pretrained_naev.sh    # reuse a trained detector folder
#
#   EPISODES=24 HELDOUT=6 EPISODE_SECONDS=60   demo episodes (seeds 0.., held-out seeds 2000..) and their length
#   WORKERS=1 THREADS=1                 Naev demo processes (each Naev takes ~1.2 cores); torch threads
#   DET_EVERY=36 DET_EPOCHS=14 DET_THREADS=2   detector: every Nth frame of the train demos, epochs, threads
#   WORK=data/naev                      where recordings, the detector and the training runs go
#   OUT=data/pretrained/naev            the shipped bundle
# Every step resumes: complete demo episodes, current perception and finished training are kept, so running
# the command again after an interruption continues where it stopped. Takes about 2 h on 2 CPU cores
# (35 min of demos, ~40 min of detector training, ~15 min of perception, ~20 min of policy training).
set -euo pipefail
cd "$(dirname "$0")/.."

EPISODES=${EPISODES:-24}
HELDOUT=${HELDOUT:-6}
SECONDS_PER_EPISODE=${EPISODE_SECONDS:-60}
WORKERS=${WORKERS:-1}
THREADS=${THREADS:-1}
DET_EVERY=${DET_EVERY:-36}
DET_EPOCHS=${DET_EPOCHS:-14}
DET_THREADS=${DET_THREADS:-2}
WORK=${WORK:-data/naev}
OUT=${OUT:-data/pretrained/naev}
CONFIG=${CONFIG:-training/configs/naev_policy.yaml}
PILOT=${PILOT:-.venv/bin/pilot}
export OMP_NUM_THREADS=$THREADS

train_dir=$WORK/recordings/train
heldout_dir=$WORK/recordings/heldout
demo_args=(--game naev --seconds "$SECONDS_PER_EPISODE" --workers "$WORKERS")

echo "== 1/5 scripted-pilot demos: $EPISODES train + $HELDOUT held-out episodes of ${SECONDS_PER_EPISODE} s"
"$PILOT" demos --out "$heldout_dir" --episodes "$HELDOUT" --seed 2000 "${demo_args[@]}"
"$PILOT" demos --out "$train_dir" --episodes "$EPISODES" --seed 0 "${demo_args[@]}"

if [[ -n "${DETECTOR:-}" ]]; then
    echo "== 2/5 detector: using $DETECTOR"
    detector=$DETECTOR
else
    detector=$WORK/detector
    echo "== 2/5 detector: training into $detector"
    if [[ ! -f "$detector/model.onnx" ]]; then
        "$PILOT" train detector --data "$train_dir" --profile naev --out "$detector" --eval "$heldout_dir" \
            --every "$DET_EVERY" --epochs "$DET_EPOCHS" --threads "$DET_THREADS"
    fi
fi

echo "== 3/5 perception (the deployed detector + tracker + HUD + state encoder over every frame)"
"$PILOT" perceive --episodes "$heldout_dir" --detector "$detector" --threads "$THREADS"
"$PILOT" perceive --episodes "$train_dir" --detector "$detector" --threads "$THREADS"

echo "== 4/5 pilot train policy ($CONFIG) on the demos"
runs=$WORK/policy
"$PILOT" train policy --config "$CONFIG" --data.data "$train_dir" --data.val-data "$heldout_dir" \
    --detector "$detector" --threads "$THREADS" --resume --out "$runs"

echo "== 5/5 bundle -> $OUT (without runs/)"
rm -rf "$OUT.tmp"
mkdir -p "$(dirname "$OUT")"
cp -r "$runs" "$OUT.tmp"
# the ONNX detector only (ONNX Runtime is the live runtime): best.pt would add 5 MB of pickle
rm -rf "$OUT.tmp/runs" "$OUT.tmp/detector/train" "$OUT.tmp/detector/dataset" "$OUT.tmp/detector/best.pt"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
du -sh "$OUT"
echo "done: $OUT (check it with: $PILOT eval --game naev --policy $OUT --episodes 10 --seconds 30 --seed 3000)"
