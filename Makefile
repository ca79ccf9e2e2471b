# sr-cli developer entry points. Everything runs inside the project venv (.venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Which torch build: `default` (what pip's configured index serves: on Linux x86-64 PyPI that is
# the CUDA build, about 3 GB of CUDA libraries) or `cpu` (the CPU-only build, about 200 MB, from
# PyTorch's CPU wheel index). The choice is remembered in .venv/.torch; `make install TORCH=cpu`
# on an existing .venv reinstalls torch (going back to the default build needs a fresh .venv).
TORCH_FILE := $(VENV)/.torch
TORCH ?= $(or $(shell cat $(TORCH_FILE) 2>/dev/null),default)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ifeq ($(TORCH),cpu)
# --upgrade: 2.14.1+cpu sorts above an installed 2.14.1 (CUDA), so an existing .venv switches.
TORCH_INDEX_ARGS := --upgrade --extra-index-url $(TORCH_CPU_INDEX)
else ifeq ($(TORCH),default)
TORCH_INDEX_ARGS :=
else
$(error TORCH=$(TORCH) is not a torch build; use TORCH=default or TORCH=cpu)
endif
# `make train TRAIN_ARGS="debug=fast"`: extra sr-train overrides, appended last.
TRAIN_ARGS ?=
# `make bench BENCH=full`: preset smoke | quick | full; BENCH_OUT: folder for results.md/.json.
BENCH ?= quick
BENCH_OUT ?= bench
BENCH_ARGS ?=
# `make study-downsample STUDY_ARGS="preset=full"`: sr-study options and sr-train overrides.
STUDY_ARGS ?=
# Workers for pytest; the suite is tuned for 2 cores.
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train pretrain-demo pretrain-aux test test-slow test-all lint format bench clean chromium FORCE

help: ## Show this help
	@grep -E '^[a-zA-Z_%-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

# Rewritten only when the requested build changes, so the stamp below goes stale exactly then.
$(TORCH_FILE): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH)' | cmp -s - $@ || echo '$(TORCH)' > $@

# The Ray launcher plugin's wheel is only downloaded (installing it pulls Ray): its config schema
# is what the tests compose cluster=ray against; best effort, the test skips without it.
# A .venv made before TORCH existed has no .torch file: it stays as it is for TORCH=default.
$(STAMP): setup.cfg pyproject.toml $(if $(or $(filter cpu,$(TORCH)),$(wildcard $(TORCH_FILE))),$(TORCH_FILE))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX_ARGS) $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[test,onnx]'
	$(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/plugin-wheels hydra-ray-launcher==1.2.2 || true
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install torch (TORCH=cpu: CPU-only build), the package and its test extras

train: $(STAMP) ## Fine-tune the bundled L1-pretrained ESRGAN with downsample + GAN losses, a few minutes on CPU
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/sr-train model=esrgan loss=downsample+gan experiment=demo $(DEMO_MIX) $(TRAIN_ARGS)

DEMO_WEIGHTS := sr_cli/data/weights/esrgan_small_x4_l1.safetensors
# The fine-tune's mix: the discriminator learns alone for 100 iterations, then a light GAN term.
DEMO_MIX := loss.gan.weight=0.001 loss.gan.start_step=100
PRETRAIN_DIR := outputs/demo_pretrain/make

pretrain-demo: $(STAMP) ## Rebuild the warm start of `make train` (L1, bundled images) into $(DEMO_WEIGHTS)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/sr-train model=esrgan loss=l1 experiment=demo_pretrain \
	  hydra.run.dir=$(PRETRAIN_DIR) $(TRAIN_ARGS)
	$(BIN)/python -c 'import sys; from sr_cli.models.pretrained import export_generator; \
	  print(export_generator(*sys.argv[1:]))' $(PRETRAIN_DIR)/checkpoints/last.ckpt $(DEMO_WEIGHTS)

AUX_WEIGHTS := sr_cli/data/weights/auxnet_samples.safetensors
AUX_STEPS := 2000

pretrain-aux: $(STAMP) ## Rebuild the auxiliary perceptual network (AuxNet, source-image task) into $(AUX_WEIGHTS)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -c 'import sys; \
	  from sr_cli.data import sample_dir; from sr_cli.train.auxiliary import pretrain_auxnet; \
	  pretrain_auxnet(sample_dir("train"), sys.argv[1], steps=int(sys.argv[2]))' $(AUX_WEIGHTS) $(AUX_STEPS)

# Headless Chromium renders the sr-report page and, driven by selenium through chromedriver,
# rates an sr-rate session in the tests (Debian packages; root on CI).
chromium:
	@{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } && \
	  command -v chromedriver >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	    echo "warning: could not install chromium/chromium-driver; the browser tests will be skipped"; }

test: $(STAMP) chromium ## Run the default test suite (excludes tests marked slow)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run only the slow tests (DDP, sweeps, multi-stage)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test
	$(BIN)/python -m pytest -m 'slow or not slow' $(PYTEST_ARGS)

lint: $(STAMP) ## Lint with ruff
	$(BIN)/ruff check sr_cli hydra_plugins tests bench
	$(BIN)/ruff format --check sr_cli hydra_plugins tests bench

format: $(STAMP) ## Format with ruff
	$(BIN)/ruff format sr_cli hydra_plugins tests bench
	$(BIN)/ruff check --fix sr_cli hydra_plugins tests bench

bench: $(STAMP) ## Benchmarks (BENCH=quick|full|smoke); writes bench/results.md and .json
	$(BIN)/python -m bench.run --preset $(BENCH) --out $(BENCH_OUT) $(BENCH_ARGS)

.PHONY: gpu-check
gpu-check: $(STAMP) ## On a CUDA machine: bf16 GAN training, 2-GPU DDP, sharded sr-eval, bf16 sr-upscale; a table
	$(BIN)/python -m bench.gpu_check $(GPU_CHECK_ARGS)

study-%: $(STAMP) ## Run a study (conf/study/*.yaml): make study-downsample STUDY_ARGS="preset=full"
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/sr-study $* $(STUDY_ARGS)

clean: ## Remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
