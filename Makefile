# `make demo`, `make test`, `make lint` and `make bench` create the virtual environment themselves.
# torch/torchvision are pinned to the releases that install from the development
# machine's local disk; everything else comes from setup.py (and any requirements*.txt).
# Changing a pin reinstalls: editing setup.py, a requirements*.txt or this file, or
# passing other pins (`make test TORCH_PINS="torch==... torchvision==..."`).
# torch 2.14.1 / torchvision 0.29.1 ship wheels for Python 3.10+ only: pass PYTHON=python3.1x
# when python3 is older.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
REQUIREMENTS := $(wildcard requirements*.txt)
BENCH_OUT ?= output/bench_quick

.PHONY: install demo test test-e2e lint bench clean FORCE

# The pins of this run; the file is rewritten (and so reinstalls) only when they change.
$(VENV)/.pins: FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH_PINS)' | cmp -s - $@ || echo '$(TORCH_PINS)' > $@

$(VENV)/.installed: setup.py Makefile $(REQUIREMENTS) $(VENV)/.pins
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "Python 3.10+ is needed (torch 2.14.1 has no wheel for older ones): make ... PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(if $(REQUIREMENTS),$(BIN)/pip install --quiet $(addprefix -r ,$(REQUIREMENTS)))
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python tools/demo.py

# The suite without the long end-to-end runs (tests/conftest.py E2E_TESTS), then those: CI runs both.
test: install
	$(BIN)/python -m pytest -q --durations=25 -m "not e2e" tests

test-e2e: install
	$(BIN)/python -m pytest -q --durations=25 -m e2e tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every script in benchmarks/ at quick settings (a few minutes on 2 CPU cores): it shows that
# each runs and what it prints. The numbers in docs/benchmarks.md come from the full commands
# given there (search_quality.py at its settings takes hours).
bench: install
	$(BIN)/python benchmarks/latency.py --rounds 5 --warmup 1 --models FBNetV2_F1 'timm mobilenetv3_small_100'
	$(BIN)/python benchmarks/budget_speed.py --spaces mnist_small_space fbnetv2_f_space
	$(BIN)/python benchmarks/search_memory.py --steps 2 --batch 8 --max-options 2 --tables channels
	$(BIN)/python benchmarks/search_cost.py --rounds 1 --limit 64 --batch 32 --arch model_zoo/weights/mnist_dmasking_1p5m.json
	$(BIN)/python benchmarks/train_throughput.py --models mnist_dmasking_1p5m --images 64 --rounds 2
	$(BIN)/python benchmarks/search_profile.py --spaces mnist_small_space --steps 1
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh --device cpu --out $(BENCH_OUT)/gpu_check
	$(BIN)/python benchmarks/search_quality.py --budgets 0.3 --seeds --random 2 --train-epochs 1 \
		--out $(BENCH_OUT)/search_quality   # random architectures only: the searched side is the full run's
	$(BIN)/python benchmarks/latency_prediction.py --table configs/latency/mnist_small_space_executorch.json \
		--old-table benchmarks/tables_v1/mnist_small_space_executorch.json --n 4 --rounds 3 --warmup 1
	$(BIN)/python tools/latency_table.py --check configs/latency/mnist_small_space_executorch.json --rounds 5 || true
	$(BIN)/python benchmarks/latency_budget.py --table configs/latency/fbnetv2_f_space_executorch.json \
		--budgets 3 --epochs 1 --images 8 --rounds 3 --warmup 1 --out $(BENCH_OUT)/latency_budget
	$(BIN)/python benchmarks/search_quality.py --cost latency --table configs/latency/mnist_small_space_executorch.json \
		--budgets 0.016 --seeds --random 2 --train-epochs 1 --rounds 3 --out $(BENCH_OUT)/search_quality_latency
	@echo "quick settings only; full runs: docs/benchmarks.md (each script's --help lists its options)"

clean:
	rm -rf $(VENV) build *.egg-info
