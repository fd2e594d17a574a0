# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q
# make demo: the digits (DATA=photos: crops of photographs bundled with scikit-image);
# LR and EPOCHS default to the demo's own (Adam 1e-3; 20 epochs)
DATA ?= digits
LR ?=
EPOCHS ?=
LOGDIR ?= runs
LOGGER ?= tensorboard

.PHONY: install demo diagnose tensorboard test test-kernels test-stress test-oldest wheel-check lint benchmark zoo lr-doctor-grid doctor-grid photo-filters clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so pip takes it from this machine's disk
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m lightning_convviz.demo --data $(DATA) $(if $(LR),--lr $(LR)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
		--logdir $(LOGDIR) --logger $(LOGGER)

# TensorBoard on the demo's logs, every frame of each time-lapse served (TensorBoard keeps 10
# images per tag unless told: a random 10 of a longer time-lapse)
tensorboard: install
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --samples_per_plugin images=1000

lint: install
	$(VENV)/bin/ruff check lightning_convviz tests examples benchmarks tools
	$(VENV)/bin/ruff format --check lightning_convviz tests examples benchmarks tools
	$(VENV)/bin/mypy

# the tests of training outcomes run again under another CPU kernel set than this machine's
# (AVX2 on an AVX-512 CPU, else the plain one): float kernels differ between machines
OTHER_KERNELS = $(shell $(PY) -c "import torch; print('avx2' if torch.backends.cpu.get_cpu_capability() == 'AVX512' else 'default')")

test: lint
	$(PY) -m pytest
	ATEN_CPU_CAPABILITY=$(OTHER_KERNELS) $(PY) -m pytest -m training_outcome -q

# the whole suite under one kernel set: make test-kernels KERNELS=default (or avx2, avx512)
KERNELS ?= default
test-kernels: install
	ATEN_CPU_CAPABILITY=$(KERNELS) $(PY) -m pytest

# the suite on a busy machine, as CI machines are: a CPU hog of the machine's size (one process,
# a PyTorch thread per core) runs beside it; then the tests of training outcomes with one
# thread (OMP_NUM_THREADS=1: other reduction orders, and the drawing worker and the background
# t-SNE on, as where training leaves cores free)
CORES = $(shell $(PY) -c "import os; print(len(os.sched_getaffinity(0)))")
test-stress: install
	$(PY) tools/cpu_hog.py --threads $(CORES) -- $(PY) -m pytest -q
	OMP_NUM_THREADS=1 $(PY) -m pytest -m training_outcome -q

# the suite at the declared floors: every direct requirement of pyproject.toml (with the dev
# extras) at its lowest version (uv's lowest-direct resolution) in .venv-oldest, torch 2.1 and
# pytorch-lightning 2.1 and lightning 2.6 among them (a CUDA build of torch: about 3 GB
# downloaded on a new machine; uv caches it).
# Two pins of what old releases need beside them: setuptools below 70 (Lightning 2.1 declares
# its namespace package with pkg_resources) and SQLAlchemy below 2.1 (MLflow 3.0 to 3.4 import
# a pool class that SQLAlchemy 2.1 removed).
OLDEST := .venv-oldest
$(OLDEST)/.installed: pyproject.toml $(VENV)/.installed
	rm -rf $(OLDEST)
	$(VENV)/bin/uv venv -q --python $(PYTHON) $(OLDEST)
	$(VENV)/bin/uv pip install -q --python $(OLDEST)/bin/python --resolution lowest-direct \
		-e ".[dev]" "setuptools>=69,<70" "sqlalchemy>=2.0.30,<2.1"
	touch $@

test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest -q

# the release: sdist and wheel built and checked, the wheel alone installed into a fresh venv,
# its demo run outside the source tree and its logs read back
wheel-check: install
	tools/check_wheel.sh $(PY)

# TrainingDoctor on a healthy run beside three planted faults, then LearningRateDoctor on a good,
# a too-high and a too-low learning rate (a minute or two on 2 cores)
diagnose: install
	$(PY) benchmarks/doctor_grid.py --show --logdir $(LOGDIR)/doctor
	$(PY) examples/lr_diagnosis.py --logdir $(LOGDIR)/lr_diagnosis

benchmark: install
	$(PY) benchmarks/activation_stats_overhead.py
	$(PY) benchmarks/attribution_vs_captum.py
	$(PY) benchmarks/tsne_embedding.py
	$(PY) benchmarks/memory_growth.py

# every callback at its defaults on every torchvision classifier and two dozen timm models
# (random weights, nothing downloaded; about an hour and a half on 2 cores)
zoo: install
	$(PY) benchmarks/model_zoo.py --out docs/zoo.md

# LearningRateDoctor against outcomes: 3 architectures x 3 optimizers x 9 learning rates and
# schedules on the digits, ResNet-18 with SGD on the photographs, three initialisations, beside
# lr_find (about 1.75 hours on 2 cores; recorded runs are kept)
lr-doctor-grid: install
	for seed in 0 1 2; do \
		$(PY) benchmarks/lr_doctor_grid.py --runs --seed $$seed --shard 0/2 & \
		$(PY) benchmarks/lr_doctor_grid.py --runs --seed $$seed --shard 1/2; wait; \
	done
	$(PY) benchmarks/lr_doctor_grid.py --table --seed 0 --out docs/lr_doctor.md
	$(PY) benchmarks/lr_doctor_grid.py --table --seeds 0 1 2 --out docs/lr_doctor.md
	$(PY) benchmarks/lr_doctor_cost.py

# TrainingDoctor against faults planted in the digits and photographs demos beside healthy runs
# (about 12 minutes on 2 cores; recorded runs are kept, --again reruns them)
doctor-grid: install
	$(PY) benchmarks/doctor_grid.py --runs
	$(PY) benchmarks/doctor_grid.py --table --out docs/doctor.md

# the photographs demo's first-layer filters under seven settings, beside random filters (about
# 14 minutes on 2 cores); writes the table and the pictures of docs/photos.md
photo-filters: install
	$(PY) benchmarks/photo_filters.py

clean:
	rm -rf $(VENV) $(OLDEST) dist runs lightning_logs .pytest_cache .mypy_cache .ruff_cache
