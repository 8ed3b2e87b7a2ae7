# `make test` and `make demo` create .venv on first use, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-slow mutation demo install bench docs clean

# the package alone (what the demo uses), then the test extra on top (what the tests use)
$(VENV)/.base: pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

# the extras that export, int8 and serving use (ONNX Runtime, OpenVINO and NNCF, the HTTP
# service, Keras weights), without the test tools
$(VENV)/.extras: $(VENV)/.base
	$(BIN)/pip install -q -c constraints.txt -e '.[export,openvino,serve,keras]'
	touch $@

install: $(VENV)/.extras

$(VENV)/.test: $(VENV)/.base
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

test: $(VENV)/.test
	$(BIN)/python -m pytest -q --durations=20

test-slow: $(VENV)/.test
	$(BIN)/python -m pytest -q -m slow --durations=20

# mutation testing of the modules listed under [tool.mutmut] in pyproject.toml (slow: not
# part of make test); `.venv/bin/mutmut results` lists the survivors
mutation: $(VENV)/.test
	$(BIN)/mutmut run --max-children 2

demo: $(VENV)/.base
	$(BIN)/vggnet train --config demo_digits --out runs/demo --overwrite true
	$(BIN)/vggnet evaluate runs/demo
	$(BIN)/vggnet samples digits --out runs/demo/samples --count 6
	$(BIN)/vggnet predict runs/demo runs/demo/samples --top-k 3

bench: $(VENV)/.test
	$(BIN)/vggnet bench

docs: $(VENV)/.test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs build site src/*.egg-info mutants
