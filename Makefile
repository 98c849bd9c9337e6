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

# Real weights and data: $(SHARED)/models and $(SHARED)/data when present, else the same on the hub.
ifneq ($(wildcard $(SHARED)/models/all-MiniLM-L6-v2/config.json),)
QS_MODEL := $(SHARED)/models/all-MiniLM-L6-v2
QS_DATA := $(SHARED)/data/imdb
else
QS_MODEL := sentence-transformers/all-MiniLM-L6-v2
QS_DATA := stanfordnlp/imdb
endif
QS_HINT := quickstart: cannot load $(QS_MODEL) / $(QS_DATA); offline, point it at local copies: \
  make quickstart SHARED=/path (with models/all-MiniLM-L6-v2 and data/imdb inside)

quickstart: setup
	@echo "quickstart: model $(QS_MODEL), data $(QS_DATA)"
	@$(BIN)/edgesent train recipes/minilm_full.yaml \
	  --set model.name_or_path=$(QS_MODEL) --set data.dataset=$(QS_DATA) \
	  --set data.max_train_samples=2000 --set data.max_eval_samples=500 --set data.max_test_samples=1000 \
	  --set data.max_length=128 --set training.epochs=1 --set name=quickstart-minilm \
	  || { echo "$(QS_HINT)" >&2; exit 1; }
	$(BIN)/edgesent export --int8 --eval-limit 500
	$(BIN)/edgesent predict "$$(ls -dt exports/quickstart-minilm-*/artifact | head -1)" \
	  "A wonderful, moving film with a superb cast." "Two hours of my life I will never get back."
	$(BIN)/edgesent bench --batch-sizes 1,8 --seq-lens 128 --threads 1,2 --budget 1 \
	  --data $(QS_DATA) --split test --limit 500

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
