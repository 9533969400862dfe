#!/usr/bin/env bash
# Produces the shipped Naev policy bundle data/pretrained/naev from scratch, with nothing downloaded; the
# Naev sibling of scripts/make_pretrained.sh (the real game, Debian's naev, on private Xvfb displays):
#
#   scripted-pilot demos (train + held-out seeds, 1280x720, probe ground truth) ─▶ detector trained on the
#       train demos' probe boxes (pilot train detector --profile naev), scored on the held-out ones
#       ─▶ perception of every episode (pilot perceive) ─▶ pilot train policy (training/configs/naev_policy.yaml)
#       ─▶ the bundle without its runs/ copied into data/pretrained/naev ─▶ its held-key thresholds fitted
#       on the held-out demos (pilot train calibrate) ─▶ DAgger rounds: the bundle plays, the scripted pilot
#       labels, the bundle is fine-tuned on every round's episodes and calibrated again
#
# Usage (from anywhere; every setting is an environment variable with the default shown):
#   bash scripts/make_pretrained_naev.sh
#   DETECTOR=data/naev/detector bash scripts/make_pretrained_naev.sh    # reuse a trained detector folder
#
#   EPISODES=24 HELDOUT=6 EPISODE_SECONDS=60   demo episodes (seeds 0.., held-out seeds 2000..) and their length
#   WORKERS=1 THREADS=1                 Naev demo processes (each Naev takes ~1.2 cores); torch threads
#   DET_EVERY=36 DET_EPOCHS=14 DET_THREADS=2   detector: every Nth frame of the train demos, epochs, threads
#   DAGGER_ROUNDS=1 DAGGER_EPISODES=16 DAGGER_SECONDS=30   DAgger rounds after behavioural cloning
#   WORK=data/naev                      where recordings, the detector and the training runs go
#   OUT=data/pretrained/naev            the shipped bundle
# Every step resumes: complete demo episodes, current perception and finished training are kept, so running
# the command again after an interruption continues where it stopped. Takes about 2 h on 2 CPU cores
# (35 min of demos, ~40 min of detector training, ~15 min of perception, ~20 min of policy training), plus
# ~17 min a DAgger round (16 x 30 s played and perceived, ~2 min of fine-tuning).
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
DAGGER_ROUNDS=${DAGGER_ROUNDS:-1}
DAGGER_EPISODES=${DAGGER_EPISODES:-16}
DAGGER_SECONDS=${DAGGER_SECONDS:-30}
WORK=${WORK:-data/naev}
OUT=${OUT:-data/pretrained/naev}
CONFIG=${CONFIG:-training/configs/naev_policy.yaml}
PILOT=${PILOT:-.venv/bin/pilot}
export OMP_NUM_THREADS=$THREADS

train_dir=$WORK/recordings/train
heldout_dir=$WORK/recordings/heldout
demo_args=(--game naev --seconds "$SECONDS_PER_EPISODE" --workers "$WORKERS")

echo "== 1/6 scripted-pilot demos: $EPISODES train + $HELDOUT held-out episodes of ${SECONDS_PER_EPISODE} s"
"$PILOT" demos --out "$heldout_dir" --episodes "$HELDOUT" --seed 2000 "${demo_args[@]}"
"$PILOT" demos --out "$train_dir" --episodes "$EPISODES" --seed 0 "${demo_args[@]}"

if [[ -n "${DETECTOR:-}" ]]; then
    echo "== 2/6 detector: using $DETECTOR"
    detector=$DETECTOR
else
    detector=$WORK/detector
    echo "== 2/6 detector: training into $detector"
    if [[ ! -f "$detector/model.onnx" ]]; then
        "$PILOT" train detector --data "$train_dir" --profile naev --out "$detector" --eval "$heldout_dir" \
            --every "$DET_EVERY" --epochs "$DET_EPOCHS" --threads "$DET_THREADS"
    fi
fi

echo "== 3/6 perception (the deployed detector + tracker + HUD + state encoder over every frame)"
"$PILOT" perceive --episodes "$heldout_dir" --detector "$detector" --threads "$THREADS"
"$PILOT" perceive --episodes "$train_dir" --detector "$detector" --threads "$THREADS"

echo "== 4/6 pilot train policy ($CONFIG) on the demos"
runs=$WORK/policy
"$PILOT" train policy --config "$CONFIG" --data.data "$train_dir" --data.val-data "$heldout_dir" \
    --detector "$detector" --threads "$THREADS" --resume --out "$runs"

# ship <runs> as $OUT: without runs/ and the detector's training files (ONNX Runtime is the live runtime:
# best.pt would add 5 MB of pickle), then its held-key thresholds fitted on the held-out demos
ship() {
    rm -rf "$OUT.tmp"
    mkdir -p "$(dirname "$OUT")"
    cp -r "$1" "$OUT.tmp"
    rm -rf "$OUT.tmp/runs" "$OUT.tmp/detector/train" "$OUT.tmp/detector/dataset" "$OUT.tmp/detector/best.pt"
    rm -rf "$OUT"
    mv "$OUT.tmp" "$OUT"
    "$PILOT" train calibrate --policy "$OUT" --data "$heldout_dir" --threads "$THREADS" >/dev/null
}

echo "== 5/6 bundle -> $OUT, held-key thresholds fitted on the held-out demos (pilot train calibrate)"
ship "$runs"

# DAgger: the bundle plays, the scripted pilot labels every frame it reaches (expert_* columns); each round
# fine-tunes the bundle (--init) on every round's episodes so far. Seeds 3100 + 200 (r - 1): never the
# evaluation's 3000-3099.
dagger_dirs=()
for ((round = 1; round <= DAGGER_ROUNDS; round++)); do
    echo "== 6/6 DAgger round $round of $DAGGER_ROUNDS: $DAGGER_EPISODES episodes of ${DAGGER_SECONDS} s"
    dir=$WORK/recordings/dagger$round
    "$PILOT" dagger --game naev --policy "$OUT" --out "$dir" --episodes "$DAGGER_EPISODES" \
        --seconds "$DAGGER_SECONDS" --seed $((3100 + 200 * (round - 1))) --workers "$WORKERS"
    "$PILOT" perceive --episodes "$dir" --detector "$detector" --threads "$THREADS"
    dagger_dirs+=("$dir")
    extra=()  # the earlier rounds' episodes
    if ((round > 1)); then extra=(--data.extra-data "${dagger_dirs[@]:1}"); fi
    "$PILOT" train policy --config "$CONFIG" --init "$OUT" --data.data "${dagger_dirs[0]}" \
        "${extra[@]}" --extra-data-models strategist tactician executor \
        --data.val-data "$heldout_dir" --detector "$detector" --threads "$THREADS" --resume \
        --out "$WORK/policy-dagger$round"
    ship "$WORK/policy-dagger$round"
done
du -sh "$OUT"
echo "done: $OUT (check it with: $PILOT eval --game naev --policy $OUT --episodes 10 --seconds 30 --seed 3000)"
