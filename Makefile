# sr-cli developer entry points. Everything runs inside the project venv (.venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# Workers for pytest; the suite is tuned for 2 cores.
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train pretrain-demo test test-slow test-all lint format bench clean chromium

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[test,onnx]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install torch, the package and its test extras

train: $(STAMP) ## Fine-tune the bundled L1-pretrained ESRGAN with downsample + GAN losses, a few minutes on CPU
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/sr-train model=esrgan loss=downsample+gan experiment=demo

DEMO_WEIGHTS := sr_cli/data/weights/esrgan_small_x4_l1.safetensors
PRETRAIN_DIR := outputs/demo_pretrain/make

pretrain-demo: $(STAMP) ## Rebuild the warm start of `make train` (L1, bundled images) into $(DEMO_WEIGHTS)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/sr-train model=esrgan loss=l1 experiment=demo_pretrain \
	  hydra.run.dir=$(PRETRAIN_DIR)
	$(BIN)/python -c 'import sys; from sr_cli.models.pretrained import export_generator; \
	  print(export_generator(*sys.argv[1:]))' $(PRETRAIN_DIR)/checkpoints/last.ckpt $(DEMO_WEIGHTS)

# Headless Chromium renders the sr-report page in the tests (Debian package; root on CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: could not install chromium; the report rendering test will be skipped"; }

test: $(STAMP) chromium ## Run the default test suite (excludes tests marked slow)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run only the slow tests (DDP, sweeps, multi-stage)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test
	$(BIN)/python -m pytest -m 'slow or not slow' $(PYTEST_ARGS)

lint: $(STAMP) ## Lint with ruff
	$(BIN)/ruff check sr_cli tests bench
	$(BIN)/ruff format --check sr_cli tests bench

format: $(STAMP) ## Format with ruff
	$(BIN)/ruff format sr_cli tests bench
	$(BIN)/ruff check --fix sr_cli tests bench

bench: $(STAMP) ## Run benchmarks; results go to bench/results.md
	$(BIN)/python -m bench.run

clean: ## Remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
