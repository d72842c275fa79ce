#!/usr/bin/env bash
# Create .venv and install midl-autok into it (editable).
#   scripts/setup.sh          the product: core + Ray Tune + Stable-Baselines3 + optuna-dashboard
#   scripts/setup.sh dev      everything the test suite and the linters need
# torch: installed first as the pinned CPU build (MIDL_AUTOK_TORCH, default 2.13.0) unless a
# torch is already in the venv; for CUDA, install your CUDA build of torch>=2.3 into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="all"
[ "${1:-}" = "dev" ] && extras="dev"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
. .venv/bin/activate
if ! python -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch==${MIDL_AUTOK_TORCH:-2.13.0}" >&2
  pip install -q "torch==${MIDL_AUTOK_TORCH:-2.13.0}"
fi
echo "setup: installing midl-autok[$extras]" >&2
pip install -q -e ".[$extras]"
echo "setup: ready ($(python -c 'import midl_autok, torch; print("midl-autok", midl_autok.__version__, "torch", torch.__version__)'))" >&2
