#!/usr/bin/env bash
# Set up (tools/setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
VENV=${EDGEVIT_VENV:-.venv}
# One thread everywhere: two threads on a busy 2-core machine crawl, and tests assert numbers, not speed.
export OMP_NUM_THREADS=1 TVM_NUM_THREADS=1 MKL_NUM_THREADS=1
set +e
"$VENV/bin/python" -m pytest -q "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit $status
