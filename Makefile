# streambandit: two commands, `make demo` and `make test`, each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BROWSER := $(VENV)/.browser
PROMTOOL := $(VENV)/.promtool

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The privacy page's test drives Debian's chromium through chromedriver: installed here
# when missing (CI runs as root; elsewhere, install the two packages the same way).
$(BROWSER):
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium chromium-driver >/dev/null; }
	@mkdir -p $(VENV) && touch $(BROWSER)

# tests/test_deploy.py checks deploy/alerts.yml with promtool, from Debian's prometheus
# package: installed here when missing (on a host without systemd, as CI, its server
# does not start).
$(PROMTOOL):
	@command -v promtool >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; }
	@mkdir -p $(VENV) && touch $(PROMTOOL)

demo: $(STAMP)
	$(BIN)/streambandit demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(BROWSER) $(PROMTOOL)
	$(BIN)/pytest -n 3  # processes: much of the suite waits on its servers and workers

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/policies.py
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/service.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
