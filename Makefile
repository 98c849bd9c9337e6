# edgesent — the two commands the README opens with:
#   make quickstart   set up, then train -> export --int8 -> predict -> bench on real MiniLM + IMDB (subset)
#   make test         set up, then run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
# CPU-only torch from the local wheel/PyPI CPU build; see README "GPU" for CUDA.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test test-all lint quickstart clean

$(BIN)/edgesent: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,openvino,ray,slim]"
	touch $(BIN)/edgesent

setup: $(BIN)/edgesent

test: setup
	$(BIN)/pytest -m "not slow" -q

test-all: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .

quickstart: setup
	$(BIN)/edgesent train recipes/minilm_full.yaml \
	  --set model.name_or_path=$(SHARED)/models/all-MiniLM-L6-v2 --set data.dataset=$(SHARED)/data/imdb \
	  --set data.max_train_samples=2000 --set data.max_eval_samples=500 --set data.max_test_samples=1000 \
	  --set data.max_length=128 --set training.epochs=1 --set name=quickstart-minilm
	$(BIN)/edgesent export --int8 --eval-limit 500
	$(BIN)/edgesent predict "$$(ls -dt exports/quickstart-minilm-*/artifact | head -1)" \
	  "A wonderful, moving film with a superb cast." "Two hours of my life I will never get back."
	$(BIN)/edgesent bench --batch-sizes 1,8 --seq-lens 128 --threads 1,2 --budget 1 \
	  --data $(SHARED)/data/imdb --split test --limit 500

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
