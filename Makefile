# The project's two commands: `make run` and `make test`. Both set themselves up on a fresh machine
# that has only Python 3.11 and make: the virtualenv is created and the package installed on first use,
# and again whenever pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench bench-scale clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/velotui --demo 25 --datastore .velotui-demo --listen 127.0.0.1:0

# Two workers, one per core of the CI machine: tests are independent (each has its own ports,
# folders and tmux socket); each idle worker takes work from the other (worksteal), so a slow test
# near the end does not leave one core idle. TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: $(INSTALLED)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: $(INSTALLED)
	$(BIN)/ruff check velotui agent tests benchmarks

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.vql
	$(BIN)/python -m benchmarks.server --agents 2000
	$(BIN)/python -m benchmarks.console --agents 2000
	$(BIN)/python -m benchmarks.export

# 15,000 simulated agents: a hunt, the server's peak memory, the reconnect storm (about 10 minutes).
bench-scale: $(INSTALLED)
	$(BIN)/python -m benchmarks.server --scale

clean:
	rm -rf $(VENV) build *.egg-info
