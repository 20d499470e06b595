# Two commands set everything up on a fresh clone (Python 3.11, pip, venv):
#   make course   -- create .venv if missing, install, run the course notebooks (cpu profile)
#   make test     -- same environment, run the whole test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= cpu


.PHONY: foundation-invariant decodability experts evidence-models evidence evidence-mtl4x alpha-regimes
.PHONY: course test venv check-env bench-scenes foundation clean-runs student lab kernel ui-deps test-ui \
        assignment grade

$(VENV)/.installed: pyproject.toml requirements-lock.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements-lock.txt -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

course: venv
	$(PY) -m simo_lite.course run --profile $(PROFILE)

test: venv
	$(PY) -m pytest -q

student: venv
	$(PY) -m simo_lite.student

# A class (README "For teachers"): release copies in nbgrader's format to notebooks/release/, validated
# both ways (sources pass every test, copies fail every test); then grade a folder or LMS zip of
# submissions into runs/grades/<name>/ (grades.csv, failures.csv, feedback/<student>.html)
ASSIGN_ARGS ?=
assignment: venv
	$(PY) -m simo_lite.assign $(ASSIGN_ARGS)

SUBMISSIONS ?=
GRADE_ARGS ?= --jobs 2
grade: venv
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=<folder or zip> [GRADE_ARGS='--jobs 2 --out DIR']"; exit 1; }
	$(PY) -m simo_lite.grade $(SUBMISSIONS) $(GRADE_ARGS)

# JupyterLab on the course notebooks (LAB_DIR=notebooks/student or notebooks/release for the copies), with the
# project's kernel "simo_lite" (this .venv) registered inside the venv; LAB_ARGS for extra options
LAB_DIR ?= notebooks
LAB_ARGS ?=
# offline: no update checks, no extension index queries; root (containers) needs --allow-root
LAB_OPTS := --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate --LabApp.extension_manager=readonly \
            $(if $(filter 0,$(shell id -u)),--allow-root,)
kernel: venv
	$(PY) -m ipykernel install --sys-prefix --name simo_lite --display-name "Python (simo_lite)" >/dev/null
	@echo "kernel 'simo_lite' registered: $$($(PY) -m jupyter kernelspec list | grep simo_lite)"

lab: kernel
	@test -d $(LAB_DIR) || { echo "$(LAB_DIR) does not exist (make student writes notebooks/student)"; exit 1; }
	$(PY) -m jupyter lab --notebook-dir=$(LAB_DIR) $(LAB_OPTS) $(LAB_ARGS)

# Real-browser check of the notebooks' widgets (tests/test_ui.py): JupyterLab on smoke copies of 03 and 05,
# driven by Playwright in Debian's chromium (apt-get install chromium when /usr/bin/chromium is missing;
# Playwright's own browser downloads are never used). Screenshots: runs/ui/. `make test` runs the same test
# when both are present and skips it otherwise; .ci/run calls `make ui-deps` first, so CI runs it once,
# inside `make test` (about 1.5-2 min on 2 cores: two smoke notebooks plus the widget round trips).
CHROMIUM := /usr/bin/chromium
ui-deps: venv
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium with apt-get"; \
	  sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install -q -c requirements-lock.txt -e ".[dev]"

test-ui: ui-deps
	$(PY) -m pytest -q -s tests/test_ui.py

check-env: venv
	$(PY) -m simo_lite.check_env

bench-scenes: venv
	$(PY) -m simo_lite.scenes --bench --size 64 128

foundation: venv
	$(PY) -m simo_lite.foundation --profile cpu --out data/foundation-cpu.safetensors

# the appearance-invariant variant (stage 2 on top of the shipped SimMIM encoder; about 25 min on 2 cores)
# and the pre-registered go / no-go probes on it (docs/preregistration.md; runs/bench/decodability-cpu-0.*)
INVARIANCE_STEPS ?= 1000
foundation-invariant: venv
	$(PY) -m simo_lite.foundation --profile cpu --invariance-steps $(INVARIANCE_STEPS) \
	  --out data/foundation-cpu-invariant.safetensors --probe-tasks texture_edges,depth
decodability: venv
	$(PY) -m benchmarks.decodability --profile cpu --invariance-steps $(INVARIANCE_STEPS)

# task arithmetic's alpha curve per task on taskonomy5, plain and after BN re-estimation, seeds 0-2 (the
# evidence models; about 3 min) -> docs/alpha-regimes-cpu.{md,json}
alpha-regimes: venv
	$(PY) benchmarks/alpha_regimes.py --seeds 0 1 2

clean-runs:
	rm -rf runs

# -- benchmarks and the generated results document (files under benchmarks/) --
.PHONY: bench results-doc test-gpu gpu-wheels
BENCH_ARGS ?=
RESULTS_RUN_DIR ?= runs/evidence/cpu-0

bench: venv     # every measured figure: Markdown tables on stdout, all in runs/bench/bench.json
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

results-doc: venv   # docs/results.md, generated from the run's results JSON, bench.json and the paper's tables
	$(PY) benchmarks/render_results.py --run-dir $(RESULTS_RUN_DIR) --bench runs/bench/bench.json \
	  --decodability docs/decodability-cpu-0.json --out docs/results.md

test-gpu:       # notebook tests in the gpu profile on CUDA; prints a skip message and exits 0 without CUDA
	bash benchmarks/test_gpu.sh

gpu-wheels:     # wheels/ for the GPU machine (papermill, nbval, ipykernel, ...), downloaded with pip
	bash benchmarks/gpu_wheels.sh

# The shipped cpu models (data/models-cpu/, manifest data/models-cpu.json): experts of nyu3 and taskonomy5 and
# their MTL models, trained to the profile's plateau budget; the course loads them when the keys match
experts: venv
	$(PY) -m simo_lite.shipped --profile cpu --sets nyu3 taskonomy5 --mtl --mtl-sets nyu3 --realign course

# the 3-seed evidence sweep behind docs/results.md (pre-registered budgets: docs/preregistration.md section 6);
# finished rows and alpha sweeps are kept in data/evidence/ (benchmarks/evidence_cache.py) so it resumes on
# another machine; then `make results-doc` renders docs/results.md. One seed after the other with 2 threads:
# on 2 cores that beat 2 workers x 1 thread (293 s vs 507 s on a 2-seed grid, README "Sweeps")
EVIDENCE_ROWS ?= experts mtl zeroshot ta ties tall ta+head ta+repr ta+lora ties+head ties+repr ties+lora \
                 ta+bn ties+bn zeroshot+head ties_k1 coefficients
evidence: venv
	$(PY) benchmarks/evidence_cache.py restore
	$(PY) -m simo_lite.experiment --profile cpu --tasks nyu3 taskonomy5 --seeds 0 1 2 --workers 1 --threads 2 \
	  --runs-root runs/evidence --name evidence-cpu --set head_realign_steps=1600 --set repr_realign_steps=200 \
	  --rows $(EVIDENCE_ROWS); rc=$$?; $(PY) benchmarks/evidence_cache.py save; exit $$rc
	cp runs/evidence/sweeps/evidence-cpu/results.json docs/evidence-cpu.json
	test ! -f docs/evidence-mtl4x-cpu.json || $(PY) benchmarks/evidence_cache.py add-rows docs/evidence-mtl4x-cpu.json --rows mtl4x

# the multi-seed evidence's models beside the course's: seeds 1 and 2 (experts and MTL of both sets) and
# seed 0's taskonomy5 MTL, into data/evidence/seed-<s>/ (found by key like data/models-cpu/); hours on 2 cores
evidence-models: venv
	for s in 1 2; do OMP_NUM_THREADS=1 $(PY) -m simo_lite.shipped --profile cpu --sets nyu3 taskonomy5 --seed $$s \
	  --mtl --data-dir data/evidence/seed-$$s --run-dir runs/evidence/cpu-$$s || exit 1; done
	OMP_NUM_THREADS=1 $(PY) -m simo_lite.shipped --profile cpu --sets taskonomy5 --seed 0 --mtl --no-experts \
	  --data-dir data/evidence/seed-0 --run-dir runs/evidence/cpu-0

# the "MTL 4x" row (4x the matched fine-tuning budget), both sets, seed 0, into data/evidence/mtl4x-seed-0/ (a model
# already there loads by key; taskonomy5's trains in about 45 min on one core); then its rows,
# in its own runs folder (a run folder's results tables hold the rows of its last command), kept in
# docs/evidence-mtl4x-cpu.json and added to docs/evidence-cpu.json (`make evidence` adds them again after it
# rewrites that file; then `make results-doc`)
evidence-mtl4x: venv
	OMP_NUM_THREADS=1 $(PY) -m simo_lite.shipped --profile cpu --sets nyu3 taskonomy5 --seed 0 --mtl --no-experts --mtl-factors 4 \
	  --data-dir data/evidence/mtl4x-seed-0 --run-dir runs/evidence/mtl4x-0
	$(PY) -m simo_lite.experiment --profile cpu --tasks nyu3 taskonomy5 --seeds 0 --threads 2 --runs-root runs/evidence-mtl4x \
	  --name evidence-mtl4x --set head_realign_steps=1600 --set repr_realign_steps=200 --rows experts mtl mtl4x
	cp runs/evidence-mtl4x/sweeps/evidence-mtl4x/results.json docs/evidence-mtl4x-cpu.json
	$(PY) benchmarks/evidence_cache.py add-rows docs/evidence-mtl4x-cpu.json --rows mtl4x
