#!/usr/bin/env bash
# The default trained and scored at several training-thread counts and seeds: does the thread count move the
# metrics beyond the seeds' spread? Each pair "THREADS SEED" runs the train and evaluate stages' own commands
# (dvc.yaml) with --set train.num_threads=THREADS --set train.seed=SEED into OUT/tTHREADS_sSEED, and prints one
# line of the headline metrics. Needs the cache of `dvc repro` (cache/default, data/synth). Run alone: the runs
# are also timed (the train log's captions/s).
#     bash bench/seeds_by_threads.sh OUT "1 0" "1 1" "1 2" "2 0" "2 1" "2 2"
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; shift
mkdir -p "$out"
export HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python}
for pair in "$@"; do
  read -r threads seed <<< "$pair"
  run="$out/t${threads}_s${seed}"
  "$PY" -m stages.train --cache cache/default --out "$run" --no-resume --grounding data/synth/grounding.json \
      --set "train.num_threads=$threads" --set "train.seed=$seed" > "$run.train.log" 2>&1
  "$PY" -m stages.evaluate grounding --cache cache/default --run "$run" --split test \
      --grounding data/synth/grounding.json --captions data/synth/captions.jsonl --images data/synth > "$run.eval.log" 2>&1
  "$PY" - "$run" "$threads" "$seed" <<'PY'
import json, sys
run, threads, seed = sys.argv[1:]
m = json.load(open(f"{run}/metrics.json"))
h = m["headline"]
print(f"threads {threads} seed {seed}: per-word pointing {h['pointing_word_all']:.4f}, margin over the object prior "
      f"{h['margin_over_object_prior_all']:.4f}, text->image R@1 {m['retrieval']['t2i']['R@1']:.4f}")
PY
done
