#!/usr/bin/env bash
# make test-gpu: the course notebook tests in the gpu profile on a CUDA device.
#
# Without CUDA (torch.cuda.is_available() false) it says so and exits 0. Missing notebook tools
# (papermill, nbval, ipykernel, ...) are installed from wheels/ with --no-index (make gpu-wheels
# fills it where pip reaches the index). Extra arguments go to pytest.
#   SIMO_LITE_GPU_PYTHON   interpreter to use (default: .venv/bin/python if present, else python3)
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${SIMO_LITE_GPU_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "test-gpu: SKIPPED, no CUDA device: torch.cuda.is_available() is False (or torch is missing) for $PY;" \
       "no test was run"
  exit 0
fi

missing=$("$PY" - <<'PYEOF'
import importlib.util
need = {"papermill": "papermill", "nbval": "nbval", "ipykernel": "ipykernel", "nbformat": "nbformat",
        "nbclient": "nbclient", "ipywidgets": "ipywidgets"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
PYEOF
)
if [ -n "$missing" ]; then
  if ! ls wheels/*.whl >/dev/null 2>&1; then
    echo "test-gpu: missing $missing and no wheels/ to install them from: run 'make gpu-wheels' where pip" \
         "reaches the package index, then bring wheels/ along" >&2
    exit 2
  fi
  echo "test-gpu: installing $missing from wheels/ (--no-index)"
  # shellcheck disable=SC2086
  if ! "$PY" -m pip install -q --no-index --find-links wheels $missing; then
    echo "test-gpu: install into the interpreter failed; installing into /tmp/simo-lite-site instead"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --no-index --find-links wheels --target /tmp/simo-lite-site $missing || exit 2
    export PYTHONPATH="/tmp/simo-lite-site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi

# the notebooks' kernels run in notebooks/: make the checkout's simo_lite importable there too
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SIMO_LITE_TEST_PROFILE=gpu
"$PY" -c 'import torch; print(f"test-gpu: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")'
exec "$PY" -m pytest -q tests/test_notebooks.py "$@"
