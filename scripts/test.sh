#!/usr/bin/env bash
# Set up (scripts/setup.sh dev), install the system tools some tests need, run the linters and
# the whole test suite. Extra arguments go to pytest, e.g. scripts/test.sh -k trainer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
. .venv/bin/activate
scripts/system-deps.sh
ruff check midl_autok tests experiments
ruff format --check midl_autok tests experiments
mypy midl_autok
python -m pytest -n 2 --dist loadgroup -q --durations=15 "$@"
