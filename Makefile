# One obvious way in. Every install goes through constraints.txt (torch/torchvision pinned as a pair).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
# The offline CIFAR-10 beside a checkout (developers' machines, CI) unless HEBBKIT_DATA is set; elsewhere the
# notebooks download CIFAR-10 with torchvision, or skip (saying why) where that is impossible.
SHARED_CIFAR := $(abspath $(CURDIR)/../shared/data/cifar10.npz)
ifeq ($(HEBBKIT_DATA),)
ifneq ($(wildcard $(SHARED_CIFAR)),)
export HEBBKIT_DATA := $(SHARED_CIFAR)
endif
endif
# Jupyter refuses to start as root (containers, cloud machines) unless told it may.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)
# The notebooks under nbval in quick mode: exact outputs compared, training numbers checked within tolerances.
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

.PHONY: install test test-notebooks workbook workbook-full lab store-outputs figures bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "Installing hebbkit and its dependencies into $(VENV): a few minutes, about 6 GB with PyPI's CUDA torch"
	@echo "(about 1.6 GB with a CPU-only torch: see README.md, Install)."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install  # unit tests and every notebook (at the default thread count)
	$(PY) -m pytest tests notebooks $(NBVAL)

test-notebooks: install  # the notebooks alone; CI runs this again at one thread (OMP_NUM_THREADS=1)
	$(PY) -m pytest notebooks $(NBVAL)

workbook: install  # every notebook, quick settings: executed copies and figures in runs/workbook/
	$(PY) -m hebbkit workbook --quick

workbook-full: install  # the full settings (use a GPU if you have one)
	$(PY) -m hebbkit workbook

lab: install  # open the notebooks in JupyterLab (as root too)
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_FLAGS)

store-outputs: install  # maintainers: re-run the notebooks (ONLY="04 05" for some) and store their clean outputs
	$(PY) -m hebbkit workbook --store-outputs $(if $(ONLY),--only $(ONLY))

figures: install  # redraw the committed figures/ that are stale (from results/ and the demos)
	$(PY) -m hebbkit figures

bench: install
	$(PY) benchmarks/bench_layers.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
