#!/usr/bin/env bash
# Set up (scripts/setup.sh dev), install the system tools some tests need, run the linters and
# the whole test suite. Extra arguments go to pytest, e.g. scripts/test.sh -k trainer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
. .venv/bin/activate
# mypy (~45 s of CPU on a fresh clone) and the CPU kernels' build (~80 s of CPU; the tests
# load the cached build instead of one pytest worker compiling while the other waits for it)
# run while apt-get downloads and installs.
mypy_log=$(mktemp)
kernels_log=$(mktemp)
mypy midl_autok >"$mypy_log" 2>&1 &
mypy_pid=$!
python -c 'from midl_autok.kernels import cpu_kernels; cpu_kernels()' >"$kernels_log" 2>&1 &
kernels_pid=$!
trap 'kill "$mypy_pid" "$kernels_pid" 2>/dev/null || true; rm -f "$mypy_log" "$kernels_log"' EXIT
scripts/system-deps.sh
ruff check midl_autok tests experiments
ruff format --check midl_autok tests experiments
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
cat "$mypy_log"
[ "$mypy_status" -eq 0 ] || exit "$mypy_status"
# A failed build is not an error here: the kernels' tests report it (or skip, with the reason).
wait "$kernels_pid" || echo "test.sh: the CPU kernels did not build ahead (the tests will say why)" >&2
cat "$kernels_log"
python -m pytest -n 2 --dist loadgroup -q --durations=15 "$@"
