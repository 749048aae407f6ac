# One obvious way in. Every install goes through constraints.txt (torch/torchvision pinned as a pair).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
# The offline CIFAR-10 beside a checkout (developers' machines, CI) unless HEBBKIT_DATA is set; elsewhere the
# notebooks download CIFAR-10 with torchvision.
SHARED_CIFAR := $(abspath $(CURDIR)/../shared/data/cifar10.npz)
ifeq ($(HEBBKIT_DATA),)
ifneq ($(wildcard $(SHARED_CIFAR)),)
export HEBBKIT_DATA := $(SHARED_CIFAR)
endif
endif
# Every notebook runs in quick mode and its printed numbers are compared with the stored ones.
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

.PHONY: install test workbook workbook-full bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest tests notebooks $(NBVAL)

workbook: install  # all six notebooks, quick settings: executed copies in runs/workbook/, figures in figures/
	$(PY) -m hebbkit workbook --quick

workbook-full: install  # the full settings (use a GPU if you have one)
	$(PY) -m hebbkit workbook

bench: install
	$(PY) benchmarks/bench_layers.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
