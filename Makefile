# The two commands of the README: `make serve` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# a clip to classify in `make serve` (any video or image path works)
VIDEO ?= ../shared/data/videos/arm_wrestling.mp4
MODEL_ARGS ?= --model ViT-B-16 --pretrained openai

.PHONY: install serve test lint bench redis

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Until the HTTP server lands, "serve" classifies one clip against the Kinetics-400 classes.
serve: install
	$(BIN)/t4v classify $(VIDEO) $(MODEL_ARGS) --preset kinetics400 --top-k 5

test: install redis
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

# the tests start their own redis-server on a free port; install it from Debian's packages if missing
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/text_encode.py
	$(BIN)/python bench/decode.py
