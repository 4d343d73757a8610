# lightning_ebm. `make train` runs the main job and `make test` the test suite; both create .venv first if it is
# missing. `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# lightning_ebm/install.py makes the venv and chooses the torch build, and says which and why: a torch the venv
# already sees is kept; with an NVIDIA driver the venv sees your Python's packages and PyPI's CUDA build goes in only
# if there is no torch; without one, the CPU build, never a CUDA one. `make install-plan` prints the commands it
# would run. Knobs: TORCH_SPEC (default torch==2.13.0), CPU_INDEX (PyTorch's CPU wheel index), LIGHTNING_EBM_GPU=0|1.
INSTALL := $(PYTHON) -m lightning_ebm.install --venv $(VENV) $(if $(TORCH_SPEC),--torch-spec '$(TORCH_SPEC)') \
	$(if $(CPU_INDEX),--cpu-index '$(CPU_INDEX)')

.PHONY: help install install-plan train test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@$(INSTALL)
	@touch $@

install: $(VENV)/.installed ## create .venv and install the project into it (an installed torch is kept)

install-plan: ## print what `make install` would run, and why, without running it
	@$(INSTALL) --dry-run

train: install ## the main job: a generative ConvNet learns a texture from one image (5-15 min on 2 CPU cores)
	$(VENV)/bin/lightning-ebm fit --config texture

test: install ## the whole test suite (CPU); installs no system package (LIGHTNING_EBM_TEST_SLURM=install: SLURM's)
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
	rm -rf runs wandb lightning_logs .pytest_cache .ruff_cache *.egg-info build dist
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
