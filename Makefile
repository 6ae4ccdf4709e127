# splitc: `make run` compiles the bundled example, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE := examples/digits/digits_cnn.onnx
CALIB := examples/digits/calib.npz

.PHONY: install run test bench bench-e2e clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/splitc $(EXAMPLE) --target raspberry-pi-4 --cloud t4 --bw 5Mbps --rtt 20ms --calib $(CALIB) -o out/
	$(BIN)/splitc run out/ --input examples/digits/sample.npy

test: install
	$(BIN)/python -m pytest -q -n 2 --timeout 900

bench: install
	$(BIN)/python bench/partition.py
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/latency_model.py

bench-e2e: install
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/load.py

clean:
	rm -rf out/ .pytest_cache .hypothesis
