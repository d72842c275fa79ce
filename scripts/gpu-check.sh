#!/usr/bin/env bash
# GPU check (under 5 minutes on one CUDA GPU): MID-L's CUDA paths, a 3-trial search with
# --device cuda, a Ray search with two trials sharing the GPU (--gpus-per-trial 0.5), and the
# trial throughput against the same search on CPU. Without CUDA it says so and exits 0.
#
#   scripts/gpu-check.sh            # uses python / midl-autok from PATH (or .venv/bin)
#   EXPERIMENT=mnist1d-mlp EPOCHS=3 scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python && -z "${VIRTUAL_ENV:-}" ]]; then PATH="$PWD/.venv/bin:$PATH"; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
EXPERIMENT="${EXPERIMENT:-digits-mlp}"
EPOCHS="${EPOCHS:-3}"

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu-check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check."
  exit 0
fi
python -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu-check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
now() { python -c 'import time; print(time.time())'; }
elapsed() { python -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

echo "== 1/4 layer tests on CUDA (tests/test_cuda.py, the op's CUDA test)"
python -m pytest -q -p no:cacheprovider tests/test_cuda.py "tests/test_ops.py::test_op_on_cuda_equals_cpu"

search() {  # search NAME ARGS...: a 3-trial search in its own store; prints seconds taken
  local name="$1"; shift
  local start end
  start="$(now)"
  midl-autok search "$EXPERIMENT" --trials 3 --epochs "$EPOCHS" --store "$work/$name" "$@" \
    > "$work/$name.log" 2>&1 || { cat "$work/$name.log"; echo "gpu-check: search $name failed"; exit 1; }
  end="$(now)"
  elapsed "$start" "$end"
}

echo "== 2/4 3-trial search, --device cuda"
t_cuda="$(search cuda --device cuda)"
echo "   ${t_cuda} s"
echo "== 3/4 Ray search, 3 trials, --gpus-per-trial 0.5 (two trials share the GPU)"
t_ray="$(search ray --device cuda --backend ray --workers 2 --gpus-per-trial 0.5)"
echo "   ${t_ray} s"
echo "== 4/4 the same 3-trial search on CPU"
t_cpu="$(search cpu --device cpu)"
echo "   ${t_cpu} s"

python - "$t_cuda" "$t_ray" "$t_cpu" "$EXPERIMENT" "$EPOCHS" <<'PY'
import sys
cuda, ray, cpu = map(float, sys.argv[1:4])
print(f"trial throughput, {sys.argv[4]}, {sys.argv[5]} epochs, 3 trials (search wall time, "
      "process start and store included):")
print("| run | seconds | trials/min | vs CPU |")
print("|---|---|---|---|")
for name, t in (("CPU", cpu), ("CUDA, one at a time", cuda), ("CUDA, Ray, 2 per GPU", ray)):
    print(f"| {name} | {t:.1f} | {3 * 60 / t:.2f} | {cpu / t:.2f}x |")
PY
echo "gpu-check: OK"
