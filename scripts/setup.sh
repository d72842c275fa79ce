#!/usr/bin/env bash
# Create .venv and install midl-autok into it (editable).
#   scripts/setup.sh          the product: core + Ray Tune + Stable-Baselines3 + optuna-dashboard
#   scripts/setup.sh dev      everything the test suite and the linters need
# torch: installed first, by pip, as the pinned CPU build (MIDL_AUTOK_TORCH, default 2.13.0)
# unless a torch is already in the venv; for CUDA, install your CUDA build of torch>=2.3 into
# .venv first. The rest is installed by uv (pip-installed into the venv; resolves and installs
# the ~130 packages in about a third of pip's time, same versions, keeps the installed torch);
# MIDL_AUTOK_INSTALLER=pip, or a uv that cannot be installed, uses pip for everything.
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
if [ "${MIDL_AUTOK_INSTALLER:-uv}" = "uv" ] && pip install -q uv >/dev/null 2>&1; then
  # --compile-bytecode: pip writes the .pyc files, uv only when asked (without them every
  # process compiles torch's sources again: ~8 s more per import where bytecode is not written)
  uv pip install -q --python .venv/bin/python --compile-bytecode -e ".[$extras]" ||
    { echo "setup: uv failed; installing with pip" >&2; pip install -q -e ".[$extras]"; }
else
  pip install -q -e ".[$extras]"
fi
echo "setup: ready ($(python -c 'import midl_autok, torch; print("midl-autok", midl_autok.__version__, "torch", torch.__version__)'))" >&2
