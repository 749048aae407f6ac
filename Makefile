# One obvious way in. Every install goes through constraints.txt (torch/torchvision pinned as a pair).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: install test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_layers.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
