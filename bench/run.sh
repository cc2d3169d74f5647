#!/usr/bin/env bash
# make bench: the benchmark of docs/benchmarks.md. Needs Debian's wrk and nothing else by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk is missing: install it with 'sudo apt-get install wrk' (Debian's package), then rerun 'make bench'." >&2
  exit 2
fi
.venv/bin/python -m pip install --quiet -e '.[bench]'
exec .venv/bin/python bench/run.py "$@"
