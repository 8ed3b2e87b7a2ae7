# `make test` and `make demo` create .venv on first use, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-slow demo bench docs clean

$(BIN)/vggnet: pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(BIN)/vggnet

test: $(BIN)/vggnet
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/vggnet
	$(BIN)/python -m pytest -q -m slow

demo: $(BIN)/vggnet
	$(BIN)/vggnet train --config demo_digits --out runs/demo --overwrite true
	$(BIN)/vggnet evaluate runs/demo
	$(BIN)/vggnet samples digits --out runs/demo/samples --count 6
	$(BIN)/vggnet predict runs/demo runs/demo/samples --top-k 3

bench: $(BIN)/vggnet
	$(BIN)/vggnet bench

docs: $(BIN)/vggnet
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs build site src/*.egg-info
