# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q
LR ?= 0.001
EPOCHS ?= 20
LOGDIR ?= runs
LOGGER ?= tensorboard

.PHONY: install demo diagnose test lint benchmark zoo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so pip takes it from this machine's disk
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m lightning_convviz.demo --lr $(LR) --epochs $(EPOCHS) --logdir $(LOGDIR) --logger $(LOGGER)

lint: install
	$(VENV)/bin/ruff check lightning_convviz tests examples benchmarks
	$(VENV)/bin/ruff format --check lightning_convviz tests examples benchmarks
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

diagnose: install
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

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache .mypy_cache .ruff_cache
