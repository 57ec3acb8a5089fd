#!/usr/bin/env bash
# CI's mutation sample (issue 18): a fixed random sample of the critical modules' mutants, run by
# scripts/bench/mutation.py with mutmut; fails when the sample's kill ratio drops below MIN_RATIO.
# The full run stays a bench: .venv/bin/python scripts/bench/mutation.py (docs/benchmarks.md).
#   bash scripts/lib/mutation_sample.sh            # from the repository root, after .venv is set up
# SAMPLE, SEED and MIN_RATIO may be set in the environment; the defaults are what CI runs (see
# docs/benchmarks.md, "Mutation testing", for how the sample size and the threshold were chosen).
set -euo pipefail
cd "$(dirname "$0")/../.."

SAMPLE=${SAMPLE:-100}
SEED=${SEED:-18}
MIN_RATIO=${MIN_RATIO:-0.85}

if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "mutation sample: skipped (the bench needs .venv on Python 3.11+ with mutmut, the dev extra)"
  exit 0
fi
echo "== mutation sample: $SAMPLE mutants, seed $SEED, kill ratio >= $MIN_RATIO"
.venv/bin/python scripts/bench/mutation.py --sample "$SAMPLE" --seed "$SEED" --jobs 1 \
  --min-ratio "$MIN_RATIO" --report .mutation/sample-report.json
