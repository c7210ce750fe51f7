#!/usr/bin/env bash
# A/B of two or more builds on a GPU machine in one device call (for developers of the wgpu
# backend).
#
#   bash crates/sparsevar-wgpu/gpu-ab.sh BASE [VARIANT ...]  # here, from the project root
#   bash target/gpu-kit/ab.sh                                # on the GPU machine; carry target/gpu-kit
#
# Builds commit BASE, each VARIANT commit (one after another, in a worktree with its own target
# folder) and the working tree ("head"), and packs the release programs, gzipped, into the GPU
# kit (../shared/gpu/pack.sh: Vulkan loader and check script). A device session is short and
# may not come back, so a variant worth trying (a rule dropped, a kernel swapped) belongs in the
# same call: commit it on a branch and name it. Writes target/gpu-kit/ab.sh. That script finds
# NVIDIA's Vulkan driver the way the kit's check.sh does, then alternates the programs over the
# benchmark configurations (two rounds each), profiles head on the device, and trains
# parity_t16 on wgpu. Output goes to $OUT/ab.txt, with one digest line per measurement on
# stdout: program (base, head, v1, v2, ...), round, config, model-steps/s, ms per step (run),
# ms per step (queued). About 2.5 minutes on an H200 for two programs, one more per variant.
# AB_QUICK=1 makes every bench a few steps (to try the script on lavapipe).
set -euo pipefail
BASE=${1:?usage: gpu-ab.sh BASE-COMMIT [VARIANT-COMMIT ...]}
shift
ROOT=$(pwd)
KIT=target/gpu-kit
WT=$ROOT/target/ab-base
head_rev=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo "+changes")

# Commits build in a worktree and target folder of their own (one shared with the working
# tree can leave one tree's build looking fresh for the other), one after another.
if [ ! -d "$WT" ]; then git worktree add -f --detach "$WT" "$BASE" >/dev/null; fi
build() { # commit label
  git -C "$WT" checkout -q --detach "$1"
  (cd "$WT" && CARGO_TARGET_DIR="$ROOT/target/ab-base-target" cargo build --release -q -p sparsevar)
  strip -o "$KIT/bin/sparsevar-$2" "$ROOT/target/ab-base-target/release/sparsevar"
  gzip -f "$KIT/bin/sparsevar-$2"
  echo "$2 = $(git rev-parse --short "$1")" >> "$KIT/programs.txt"
}
bash ../shared/gpu/pack.sh >/dev/null # builds the working tree
rm -f "$KIT/bin/sparsevar" "$KIT/programs.txt"
build "$BASE" base
labels="base head"
i=0
for v in "$@"; do
  i=$((i + 1))
  build "$v" "v$i"
  labels="$labels v$i"
done
strip -o "$KIT/bin/sparsevar-head" "$ROOT/target/release/sparsevar"
gzip -f "$KIT/bin/sparsevar-head"
echo "head = $head_rev" >> "$KIT/programs.txt"

# The Vulkan setup of check.sh: everything before its first measurement.
sed -n '1,/^sec "sparsevar info"/p' "$KIT/check.sh" | sed '$d' > "$KIT/ab.sh"
cat >> "$KIT/ab.sh" <<EOF
LABELS="$labels"
EOF
cat >> "$KIT/ab.sh" <<'EOF'
exec > >(tee "$LOG/ab.txt") 2>&1
cat "$KIT/programs.txt"
QUICK=${AB_QUICK:-}
# The programs travel gzipped (four fit the carry limit); unpack them outside the kit.
BIN=/tmp/sparsevar-ab
mkdir -p "$BIN"
for v in $LABELS; do gunzip -c "$KIT/bin/sparsevar-$v.gz" > "$BIN/sparsevar-$v"; chmod +x "$BIN/sparsevar-$v"; done
sec "info"; timeout 60 "$BIN/sparsevar-head" info 2>&1 | head -6
one() { # variant round model T runs steps
  local steps=$6 reps=5
  [ -n "$QUICK" ] && { steps=2; reps=1; }
  local r; r=$(timeout 120 "$BIN/sparsevar-$1" bench --backend wgpu --model "$3" --T "$4" --batch 32 --runs "$5" \
    --steps "$steps" --repeats "$reps" --json 2>>"$LOG/ab.err" | tail -1)
  python3 - "$1 r$2 $3 T$4 R$5" "$r" <<'P'
import json, sys
try:
    j = json.loads(sys.argv[2])
    print("RESULT", sys.argv[1], round(j["model_steps_per_s"]), round(j["ms_per_step"], 3), round(j["host_ms_per_step"], 3))
except Exception:
    print("RESULT", sys.argv[1], "failed:", sys.argv[2][:160])
P
}
sec "A/B: variant round config | model-steps/s, ms/step run, ms/step queued"
configs=("paper1l 64 1 200" "paper1l 16 1 200" "paper1l 256 1 200" "paper1l 64 32 50" "paper1l 64 256 50" "paper1l 16 256 50" "mlp 64 1 200")
[ -n "$QUICK" ] && configs=("paper1l 16 1 200")
for cfg in "${configs[@]}"; do
  for round in 1 2; do for v in $LABELS; do one "$v" $round $cfg; done; done
done
sec "device profiles (head)"
if [ -z "$QUICK" ]; then
  timeout 90 "$BIN/sparsevar-head" bench --backend wgpu --T 64 --runs 1 --steps 50 --repeats 2 --profile 2>&1 | tail -45
  timeout 90 "$BIN/sparsevar-head" bench --backend wgpu --T 16 --runs 256 --steps 20 --repeats 2 --profile 2>&1 | tail -30
fi
sec "learning on wgpu (head)"
cat > /tmp/ab_parity_t16.yaml <<'Y'
task:  { kind: sparse_parity, T: 16, s: 3 }
model: { kind: transformer, layers: 1, d_model: 64, heads: 4, mlp: 4, attention: softmax }
train: { samples: 1000, batch: 32, max_steps: 20000, eval_every: 100 }
seeds: [0, 1, 2, 3]
Y
if [ -z "$QUICK" ]; then
  S=$SECONDS
  timeout 120 "$BIN/sparsevar-head" train /tmp/ab_parity_t16.yaml --backend wgpu --out /tmp/ab_train -q > "$LOG/train.log" 2>&1
  echo "train rc=$? in $((SECONDS - S)) s"
  python3 -c "import json; ms = json.load(open('/tmp/ab_train/summary.json'))['members']; print('RESULT train', [m.get('learned') for m in ms], [m.get('step') for m in ms])"
fi
sec "done"
EOF
du -sh "$KIT"
echo "device call: bash $KIT/ab.sh, carry [\"$KIT\"], timeout_s $((240 + 60 * $#)) ($(tr '\n' ' ' < "$KIT/programs.txt"))"
