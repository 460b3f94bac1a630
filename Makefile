# Vandamme: two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SPECS  ?= specs/
STAMP  := $(VENV)/.installed

.PHONY: run test validate install clean claude-code bench schema soak fuzz redis chromium podman image test-image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/vandamme run $(SPECS)

validate: $(STAMP)
	$(BIN)/vandamme validate $(SPECS)

# The middleware part of schemas/vandamme.schema.json, generated from the stage registry.
schema: $(STAMP)
	$(BIN)/python -m vandamme.engine.schema --write

# The real Claude Code CLI for the end-to-end test, in a git-ignored folder of the repo.
# Skipped (not failed) where npm is missing: the test prints why.
claude-code:
	@if command -v npm >/dev/null 2>&1; then \
	  test -x .tools/claude-code/node_modules/.bin/claude || \
	  timeout 600 npm install --silent --no-audit --no-fund --prefix .tools/claude-code @anthropic-ai/claude-code >/dev/null 2>&1 || \
	  echo "claude-code: npm install failed; the Claude Code test will be skipped"; \
	else echo "claude-code: npm not found; the Claude Code test will be skipped"; fi

# Debian's redis-server for the shared-state tests (tests/test_shared_state.py). Never fails
# `make test`: where it cannot be installed, this says why and those tests skip with the reason.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    { timeout 600 apt-get update -q && timeout 600 apt-get install -y -q --no-install-recommends redis-server; } \
	      >/tmp/vandamme-redis-install.log 2>&1 || \
	    echo "redis: apt-get could not install redis-server (see /tmp/vandamme-redis-install.log); the shared-state tests will be skipped"; \
	  else echo "redis: apt-get not found; the shared-state tests will be skipped"; fi; }

# Debian's chromium for the dashboard browser test (tests/test_dashboard.py drives it with
# Playwright, executable_path=/usr/bin/chromium: no browser download). Never fails `make test`:
# where it cannot be installed, this says why and that test skips with the reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    { timeout 900 apt-get update -q && timeout 900 apt-get install -y -q chromium; } \
	      >/tmp/vandamme-chromium-install.log 2>&1 || \
	    echo "chromium: apt-get could not install chromium (see /tmp/vandamme-chromium-install.log); the dashboard browser test will be skipped"; \
	  else echo "chromium: apt-get not found; the dashboard browser test will be skipped"; fi; }

# The container image (deploy/docker/Dockerfile; docs/deploy.md, "Image") as tests/test_image.py
# runs it. `podman` installs Debian's podman, runc and debootstrap when missing; `image` makes a
# Debian base with python3 (debootstrap + podman import, once), the wheelhouse (pip in that base,
# again only when pyproject.toml changes) and the image with `podman build --isolation chroot`
# (~15 s once the base exists). Neither fails where something cannot be installed or reached: they
# say why, and the image test skips with the reason. `make test` builds the image only where podman
# is already installed; `make test-image` installs it first and runs the image test alone.
IMAGE      ?= localhost/vandamme:test
IMAGE_BASE ?= localhost/vandamme-test-base:bookworm

podman:
	@missing=""; for t in podman runc debootstrap; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "podman:$$missing not found: installing them from Debian (needed to build and run the image)"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    { timeout 900 apt-get update -q && timeout 900 apt-get install -y -q --no-install-recommends podman runc debootstrap; } \
	      >/tmp/vandamme-podman-install.log 2>&1 || \
	    echo "podman: apt-get could not install$$missing (see /tmp/vandamme-podman-install.log); the image test will be skipped"; \
	  else echo "podman: apt-get not found; the image test will be skipped"; fi; \
	fi

image: $(STAMP)
	@IMAGE=$(IMAGE) IMAGE_BASE=$(IMAGE_BASE) PYTHON=$(BIN)/python sh deploy/docker/build.sh image

test-image: $(STAMP) podman
	@IMAGE=$(IMAGE) IMAGE_BASE=$(IMAGE_BASE) PYTHON=$(BIN)/python sh deploy/docker/build.sh image
	CONTAINERS_CONF=$(CURDIR)/build/image/containers.conf VDM_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q -rs tests/test_image.py

test: $(STAMP) claude-code redis chromium image
	$(BIN)/python -m pytest -q

# Fuzzing (tests/test_fuzz.py, docs/reliability.md): generated requests through one live gateway;
# `make test` runs 1,000 of them, this 50,000 (FUZZ_EXAMPLES=n for another count).
FUZZ_EXAMPLES ?= 50000
fuzz: $(STAMP)
	VDM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py

clean:
	rm -rf $(VENV) .tools .pytest_cache build *.egg-info

# Benchmark (docs/performance.md): installs nginx + wrk from Debian if missing, vandamme-proxy 2.0.9
# into bench/.work/venv-vdm, claude-code-router into bench/.work/ccr where npm is present (and
# LiteLLM when BENCH_LITELLM=1), then runs bench/run.py (~26 min; its docstring lists the knobs).
# Quick look: BENCH_DURATION=2 BENCH_REPEAT=1 make bench (~5 min).
CCR_VERSION ?= 2.0.0
bench: $(STAMP)
	@command -v nginx >/dev/null 2>&1 || (apt-get update -q && (apt-get install -y -q nginx-light || apt-get install -y -q nginx))
	@command -v wrk >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q wrk)
	@mkdir -p bench/.work
	@test -x bench/.work/venv-vdm/bin/vdm || { $(PYTHON) -m venv bench/.work/venv-vdm && \
	  bench/.work/venv-vdm/bin/pip install -q vandamme-proxy==2.0.9 >bench/.work/venv-vdm.log 2>&1; } || \
	  echo "bench: vandamme-proxy install failed (see bench/.work/venv-vdm.log); it will show as failed to start"
	@if command -v npm >/dev/null 2>&1; then \
	  grep -qs '"version": "$(CCR_VERSION)"' bench/.work/ccr/node_modules/@musistudio/claude-code-router/package.json || \
	  timeout 600 npm install --no-audit --no-fund --prefix bench/.work/ccr @musistudio/claude-code-router@$(CCR_VERSION) \
	    >bench/.work/ccr.log 2>&1 || \
	  echo "bench: claude-code-router install failed (see bench/.work/ccr.log); it will show as failed to start"; \
	else echo "bench: npm not found; claude-code-router will show as failed to start"; fi
	@if [ "$(BENCH_LITELLM)" = "1" ]; then test -x bench/.work/venv-litellm/bin/litellm || { $(PYTHON) -m venv bench/.work/venv-litellm && \
	  bench/.work/venv-litellm/bin/pip install -q 'litellm[proxy]' >bench/.work/venv-litellm.log 2>&1; } || \
	  echo "bench: LiteLLM install failed (see bench/.work/venv-litellm.log)"; fi
	$(BIN)/python bench/run.py

# Soak (docs/reliability.md, "Soak"): a real `vandamme run` in front of a fault-injecting upstream,
# SOAK_SECONDS (600) of steady mixed traffic; exit status 1 when a goal is missed. bench/soak.py
# lists the other knobs.
SOAK_SECONDS ?= 600
soak: $(STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python bench/soak.py
