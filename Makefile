PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CKPTS := $(addprefix partialdeploy/data/,demo_narrow.safetensors demo.safetensors demo_wide.safetensors)

.PHONY: install test test-slow demo bench lint dist clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/partialdeploy export --target all -o dist/demo
	$(BIN)/partialdeploy profile dist/demo --batch 1
	$(BIN)/partialdeploy plan --sweep $(DEMO_CKPTS) --targets onnxruntime,openvino --precisions fp32,int8 \
		--budget 1ms --percentile p50 --max-drop 0.5 -o dist/plan

bench: install
	$(BIN)/python scripts/bench.py --int8 --int8-fallback

# A wheel of this checkout in dist/ (pip builds it in isolation with setuptools + wheel from PyPI). On a device:
#   pip install 'dist/partialdeploy-<version>-py3-none-any.whl[tensorrt]'   (or [onnxruntime]); no torch.
dist: install
	$(BIN)/pip wheel -q --no-deps -w dist .
	@ls dist/*.whl

lint: install
	$(BIN)/ruff check partialdeploy tests scripts

clean:
	rm -rf dist .pytest_cache
