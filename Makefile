# FeedbackPulse Webhooks. `make run` runs everything with demo data; `make test` runs every test.
CARGO ?= cargo

.PHONY: build test run lint fmt

build:
	$(CARGO) build --workspace --bins

# One debug build serves every test binary; the end-to-end tests start the service binaries it made.
test:
	deploy/local/ensure-services.sh
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

run:
	deploy/local/run.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
