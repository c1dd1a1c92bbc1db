#!/usr/bin/env bash
# lm-evaluation-harness in the benchmark's own virtual environment (benchmarks/.work/venv,
# git-ignored), layered on the project's venv so that it runs the very same torch and
# transformers: a constraints file pins them, so pip can neither pull a CUDA torch nor move
# transformers. Usage: bash benchmarks/setup_lm_eval.sh [path/to/project/venv]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
project_venv="${1:-$here/../.venv}"
work="$here/.work"
venv="$work/venv"
mkdir -p "$work"
"$project_venv/bin/python" -m venv --system-site-packages "$venv"
site="$("$project_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
own_site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$site" > "$own_site/_project_venv.pth"
"$project_venv/bin/python" -m pip freeze 2>/dev/null \
  | grep -iE '^(torch|transformers|tokenizers|numpy|datasets|accelerate|huggingface.hub|safetensors|pyarrow)==' \
  > "$work/constraints.txt"
"$venv/bin/python" -m pip install -q -c "$work/constraints.txt" "lm-eval==0.4.13" accelerate
HF_HUB_OFFLINE=1 "$venv/bin/python" -c \
  'import lm_eval, transformers, torch; print("lm-eval", lm_eval.__version__, "transformers", transformers.__version__, "torch", torch.__version__)'
