# The two commands of the README: `make serve` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_ARGS ?= --model ViT-B-16 --pretrained openai

.PHONY: install install-dev serve test lint bench system-deps docs

# serving needs the package and the client; the tests and the linters add dev (pytest, ruff, mypy,
# the browser driver) and distributed (Ray Data, whose tests run in CI)
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e . -e clients
	touch $@

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,distributed]' -e clients
	touch $@

# the HTTP server on 127.0.0.1:8000 with the Kinetics-400 vocabulary registered
serve: install
	@echo "text4vis-serve: the web page at http://127.0.0.1:8000/, the API at http://127.0.0.1:8000/docs"
	@echo "  then, in another shell: source $(VENV)/bin/activate && t4v-client classify clip.mp4 --vocab kinetics400"
	@echo "  without network: make serve MODEL_ARGS=\"--model ViT-B-32 --random-init\" (random weights, a try-out)"
	$(BIN)/t4v serve $(MODEL_ARGS) --preset kinetics400

test: install-dev system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

# the tests start their own redis-server on a free port and drive Debian's Chromium (the web page);
# both come from Debian's packages when missing (Playwright never downloads a browser here)
# (another apt process holding the dpkg lock is waited for, up to 10 minutes, instead of failing)
system-deps:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || { \
	  apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
	    redis-server chromium >/dev/null; }

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# docs/configuration.md from the settings (a test fails when it is stale)
docs: install
	$(BIN)/python -m text4vis.server.config_reference

bench: install
	$(BIN)/python bench/text_encode.py
	$(BIN)/python bench/decode.py
