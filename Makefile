# FeedbackPulse Webhooks. `make run` runs everything with demo data; `make test` runs every test.
CARGO ?= cargo

.PHONY: build test run lint fmt schemathesis browser

# The schemathesis of the OpenAPI conformance test (crates/fp-testkit/tests/openapi_conformance.rs),
# installed into a venv under target/ by deploy/local/ensure-schemathesis.sh.
FP_SCHEMATHESIS ?= $(CURDIR)/target/tools/schemathesis/bin/schemathesis
export FP_SCHEMATHESIS

build:
	$(CARGO) build --workspace --bins

# One debug build serves every test binary; the end-to-end tests start the service binaries it made.
test: schemathesis browser
	deploy/local/ensure-services.sh
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# Installs the pinned schemathesis unless it is already there.
schemathesis:
	deploy/local/ensure-schemathesis.sh

# Installs Debian's chromium and chromium-driver (the dashboard's browser tests) unless present.
browser:
	deploy/local/ensure-browser.sh

run:
	deploy/local/run.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
