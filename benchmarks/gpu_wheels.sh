#!/usr/bin/env bash
# Download into wheels/ the packages that `make test-gpu` needs and the GPU machine lacks (papermill,
# nbval, a Jupyter kernel and their dependencies), as wheels for its Python (3.12, x86-64 Linux by
# default). Run it where pip reaches the package index; benchmarks/test_gpu.sh installs from wheels/
# with --no-index. wheels/ ignores its own contents (wheels/.gitignore), so nothing gets committed.
#
#   bash benchmarks/gpu_wheels.sh                      # or: make gpu-wheels
#   GPU_PYTHON_VERSION=3.11 bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON_FOR_PIP:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
PYVER=${GPU_PYTHON_VERSION:-3.12}
DEST=${WHEELS_DIR:-wheels}
# the versions the course is tested with (requirements-lock.txt)
PKGS=$(grep -E '^(papermill|nbval|ipykernel|nbformat|nbclient|ipywidgets)==' requirements-lock.txt | tr '\n' ' ')
[ -n "$PKGS" ] || PKGS="papermill nbval ipykernel nbformat nbclient ipywidgets"

mkdir -p "$DEST"
[ -f "$DEST/.gitignore" ] || printf '*\n' > "$DEST/.gitignore"
platforms=""
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
echo "downloading for CPython $PYVER (x86-64 Linux) into $DEST/: $PKGS"
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp \
  --python-version "$PYVER" $platforms -d "$DEST" $PKGS
n=$(find "$DEST" -name '*.whl' | wc -l)
size=$(du -sh "$DEST" | cut -f1)
echo "wheels/: $n wheels, $size; carry it to the GPU machine, then: make test-gpu"
