# The project's two commands: `make run` and `make test`. Both set themselves up on a fresh machine
# that has only Python 3.11 and make: the virtualenv is created and the package installed on first use,
# and again whenever pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/velotui query --format table "SELECT 'velotui' AS Name, format(format='%d + %d = %d', args=[2, 2, 4]) AS Sum FROM scope()"

test: $(INSTALLED)
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check velotui agent tests

bench: $(INSTALLED)
	$(BIN)/python -m velotui.vql.bench

clean:
	rm -rf $(VENV) build *.egg-info
