#!/usr/bin/env bash
# A/B of two builds' CPU speed on this machine (for developers of the CPU backend).
#
#   bash crates/sparsevar-cpu/cpu-ab.sh BASE [ROUNDS]     # from the project root; ROUNDS = 6
#
# Builds commit BASE (in a worktree with its own target folder, shared with gpu-ab.sh) and the
# working tree, then runs `sparsevar bench --json` on issue 15's four configurations (paper1l
# T = 64 R = 1 and R = 32, T = 256 R = 8, MLP R = 32; B = 32), the two builds back to back
# for each, in alternating order round after round. A shared machine's speed drifts by 15% and
# more from one minute to the next, so two medians taken minutes apart say little; the ratio
# of two runs seconds apart is steadier. Prints, per configuration, each build's median and
# range of model-steps/s and the median and range of the per-round ratio head / base, with a
# verdict: faster or slower where a sign test over the rounds says p < 0.05 (6 rounds, all
# on one side, at the least), within noise otherwise. Raw JSON lines go
# to target/cpu-ab/log.txt. About 3 minutes at 6 rounds on 2 cores, builds aside.
# AB_THREADS (2) and AB_STEPS (100) set bench's --threads and --steps.
set -euo pipefail
BASE=${1:?usage: cpu-ab.sh BASE-COMMIT [ROUNDS]}
ROUNDS=${2:-6}
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
WT=$ROOT/target/ab-base
OUTDIR=$ROOT/target/cpu-ab
base_rev=$(git rev-parse --short "$BASE")
head_rev=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo "+changes")

if [ ! -d "$WT" ]; then git worktree add -f --detach "$WT" "$BASE" >/dev/null; fi
git -C "$WT" checkout -q --detach "$BASE"
(cd "$WT" && CARGO_TARGET_DIR="$ROOT/target/ab-base-target" cargo build --release -q -p sparsevar)
cargo build --release -q -p sparsevar
mkdir -p "$OUTDIR"
cp "$ROOT/target/ab-base-target/release/sparsevar" "$OUTDIR/base"
cp "$ROOT/target/release/sparsevar" "$OUTDIR/head"
LOG=$OUTDIR/log.txt
echo "# base = $base_rev, head = $head_rev, $(date -u +%FT%TZ), $(nproc) cores" > "$LOG"

configs=("--runs 1" "--runs 32" "--T 256 --runs 8" "--model mlp --runs 32")
for round in $(seq 1 "$ROUNDS"); do
  order="base head"
  [ $((round % 2)) -eq 0 ] && order="head base"
  for cfg in "${configs[@]}"; do
    for v in $order; do
      # shellcheck disable=SC2086 # cfg holds several flags
      j=$("$OUTDIR/$v" bench $cfg --json --threads "${AB_THREADS:-2}" --steps "${AB_STEPS:-100}" 2>/dev/null | tail -1)
      echo "$round|$cfg|$v|$j" >> "$LOG"
    done
  done
  echo "round $round of $ROUNDS done" >&2
done

python3 - "$LOG" <<'P'
import json, math, statistics, sys
lines = [l.rstrip("\n").split("|", 3) for l in open(sys.argv[1]) if not l.startswith("#")]
print(open(sys.argv[1]).readline().strip("# \n"))
runs = {}
for rnd, cfg, v, j in lines:
    runs.setdefault(cfg, {}).setdefault(int(rnd), {})[v] = json.loads(j)
print(f"{'configuration':24} {'base: median [range]':26} {'head: median [range]':26} {'head / base per round':28} verdict")
for cfg, rounds in runs.items():
    both = [r for r in rounds.values() if "base" in r and "head" in r]
    rate = {v: [r[v]["model_steps_per_s"] for r in both] for v in ("base", "head")}
    ratio = [r["head"]["model_steps_per_s"] / r["base"]["model_steps_per_s"] for r in both]
    gf = statistics.median(r["head"]["gflops_per_s"] for r in both)
    cell = lambda xs: f"{statistics.median(xs):,.0f} [{min(xs):,.0f}–{max(xs):,.0f}]"
    # Two-sided sign test over the rounds: with 4 rounds even 4 of 4 on one side is p = 0.125.
    n, up = len(ratio), sum(r > 1 for r in ratio)
    k = max(up, n - up)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)
    verdict = ("faster" if up > n - up else "slower") + f" (sign test p = {p:.3f})" if p < 0.05 else f"within noise (p = {p:.2f})"
    print(f"{cfg:24} {cell(rate['base']):26} {cell(rate['head']):26} {statistics.median(ratio):.3f} [{min(ratio):.3f}–{max(ratio):.3f}]{'':6} {verdict} (head {gf:.0f} GFLOP/s)")
P
