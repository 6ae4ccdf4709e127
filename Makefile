# splitc: `make run` compiles the bundled example, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE := examples/digits/digits_cnn.onnx
CALIB := examples/digits/calib.npz

.PHONY: install run test test-arm arm-setup bench bench-e2e clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,tvm]'
	touch $@

run: install
	$(BIN)/splitc $(EXAMPLE) --target raspberry-pi-4 --cloud t4 --bw 5Mbps --rtt 20ms --calib $(CALIB) -o out/
	$(BIN)/splitc run out/ --input examples/digits/sample.npy

test: install arm-setup
	$(BIN)/python -m pytest -q -n 2 --timeout 900

# aarch64 TVM builds run under qemu-user: tests/arm/setup.sh installs the tools (apt, as root), builds an
# arm64 sysroot and fetches the aarch64 TVM wheels, cached in ~/.cache/splitc-arm; tests skip with the reason
# when that is impossible. `make test` runs these tests too.
arm-setup: install
	PYTHON=$(BIN)/python bash tests/arm/setup.sh >/dev/null

test-arm: arm-setup
	$(BIN)/python -m pytest -q -rs --timeout 900 tests/test_tvm_arm.py tests/test_tvm_backend.py

bench: install
	$(BIN)/python bench/partition.py
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/latency_model.py
	$(BIN)/python bench/tvm.py

bench-e2e: install
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/load.py

clean:
	rm -rf out/ .pytest_cache .hypothesis
