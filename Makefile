# lightning_ebm. `make train` runs the main job and `make test` the test suite; both create .venv first if it is
# missing. `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first, so that the project's loose `torch>=2.6` never pulls a 5 GB CUDA build onto a CPU machine.
# Where an NVIDIA driver is found, the venv sees the Python's own packages, so a torch you installed is kept (else
# PyPI's default CUDA build is installed); elsewhere the CPU build, torch==2.13.0, goes in. A torch that the venv
# already sees is never replaced. Without CUDA and without that wheel at hand:
#   make install TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cpu
GPU := $(shell command -v nvidia-smi 2>/dev/null)
TORCH ?= $(if $(GPU),torch,torch==2.13.0)
TORCH_INDEX ?=
VENV_FLAGS ?= $(if $(GPU),--system-site-packages)

.PHONY: help install train test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install the project into it (an installed torch is kept)

train: install ## the main job: a generative ConvNet learns a texture from one image (~5 min on 2 CPU cores)
	$(PY) -m lightning_ebm fit --config conf/experiments/texture.yaml

test: install ## the whole test suite (CPU, a few minutes)
	$(PY) -m pytest

lint: install ## ruff: lint and formatting check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install ## ruff: fix what can be fixed and format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install ## benchmarks (bench/), printed as tables
	$(PY) bench/sampler.py
	$(PY) bench/dataloader.py
	$(PY) bench/coopnets_vs_descriptor.py
	$(PY) bench/multigrid_vs_cd.py
	$(PY) bench/abp_vs_pca.py
	$(PY) bench/abp_compressed.py
	$(PY) bench/generative_gradient.py
	$(PY) bench/speed.py

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf runs wandb lightning_logs .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
