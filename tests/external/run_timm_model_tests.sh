#!/usr/bin/env bash
# Run timm's own model tests (pytorch-image-models tests/test_models.py, vendored as
# timm_test_models.py) against the models this package registers with timm.
#
#   tests/external/run_timm_model_tests.sh                       # every test, all our models
#   tests/external/run_timm_model_tests.sh -k test_model_default_cfgs   # extra args go to pytest
#   tests/external/run_timm_model_tests.sh --offline             # no network: the pretrained tests
#       load random stand-in checkpoints of the published layout (TIMM_ZOO_STANDIN_WEIGHTS=1)
#
# timm_zoo_plugin imports model_zoo before the vendored module is collected and deselects
# every item that is not about one of our models. --confcutdir keeps tests/conftest.py (this
# repo's suite setup) out; OMP_NUM_THREADS (default 1) sets torch's threads.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python
cd "$ROOT"
if [ "${1:-}" = "--offline" ]; then
    shift
    export TIMM_ZOO_STANDIN_WEIGHTS=1
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PYTHONPATH="$HERE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m pytest -p timm_zoo_plugin --confcutdir "$HERE" -p no:cacheprovider -rfEs \
    "$HERE/timm_test_models.py" "$@"
