# FeedbackPulse Webhooks. `make run` runs everything with demo data; `make test` runs every test.
CARGO ?= cargo

.PHONY: build test run lint fmt schemathesis kubernetes-validate python-publisher browser prometheus verifiers services images compose-test

# The schemathesis of the OpenAPI conformance test (crates/fp-testkit/tests/openapi_conformance.rs),
# installed into a venv under target/ by deploy/local/ensure-schemathesis.sh.
FP_SCHEMATHESIS ?= $(CURDIR)/target/tools/schemathesis/bin/schemathesis
export FP_SCHEMATHESIS
# The venv of the Kubernetes manifests' schema checks (crates/fp-testkit/tests/deploy_files.rs),
# installed by deploy/local/ensure-kubernetes-validate.sh.
FP_KUBERNETES_PYTHON ?= $(CURDIR)/target/tools/kubernetes-validate/bin/python
export FP_KUBERNETES_PYTHON
# The venv of the Python publishing example (crates/fp-testkit/tests/python_publisher.rs): pika,
# protobuf and the classes generated from proto/, installed by deploy/local/ensure-python-publisher.sh.
FP_PUBLISHER_PYTHON ?= $(CURDIR)/target/tools/python-publisher/bin/python
export FP_PUBLISHER_PYTHON

build:
	$(CARGO) build --workspace --bins

# One debug build serves every test binary; the end-to-end tests start the service binaries it made,
# and the compose test puts them in an image. With cargo-nextest installed (machines of the
# project's rust-docker kind have it) the tests of all binaries run side by side, four at a time
# (.config/nextest.toml), and the doc tests after them; without it, `cargo test` runs one test
# binary at a time (README, "The two commands").
test: services schemathesis kubernetes-validate python-publisher browser prometheus verifiers
	$(CARGO) build --workspace --bins
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace && $(CARGO) test --workspace --doc; \
	else \
		echo "cargo-nextest is not installed: cargo test runs one test binary at a time"; \
		$(CARGO) test --workspace; \
	fi
	deploy/docker/compose-test.sh

# The local stand-in images (deploy/docker/local-images.sh) from the debug binaries: the first time it
# makes a Debian base with debootstrap (about 1 min), PostgreSQL and RabbitMQ images (about 2 min each).
images:
	deploy/docker/local-images.sh debug

# docker-compose.yml end to end on those images (deploy/docker/compose-test.sh); needs `make build`.
compose-test:
	deploy/docker/compose-test.sh

# The fault suite (crates/fp-testkit/tests/fault_suite.rs): per scenario, a load through the real
# services on a PostgreSQL cluster and a RabbitMQ node of the suite's own, with one fault injected;
# the table goes to target/chaos/report.md. `make test` skips it (ignored); it runs here alone.
# FP_CHAOS_SCENARIOS=kill_api,poison_messages runs only those scenarios.
# `--workspace --test`, not `-p fp-testkit`: Cargo then builds the dependencies with the same
# features as for `make test`, whose test binary is reused; `-p` rebuilt about a hundred
# dependencies (89 s on the CI machine).
.PHONY: chaos cluster-test cluster-partition-test
chaos: services
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --test fault_suite -- --ignored --nocapture --test-threads=1

# The RabbitMQ cluster tests of issue #11 (crates/fp-testkit/tests/rabbitmq_cluster.rs, about 5 min
# each): three nodes in containers (deploy/docker/rabbitmq-cluster.sh; it builds the local RabbitMQ
# image first if it is missing), the api, two dispatchers and log-ingest on all three, under load;
# the table goes to target/chaos/cluster-report.md. They need docker and fail, not skip, without it.
# .ci/run runs cluster-partition-test, which begins with cluster-test's node loss.
# cluster-test: the node leading the dispatchers' queue is stopped and started again.
cluster-test: services
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --test rabbitmq_cluster -- --ignored --nocapture --exact deliveries_survive_the_loss_of_the_node_leading_the_queue

# cluster-partition-test: the same, then the next leader is cut off the network and put back.
cluster-partition-test: services
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --test rabbitmq_cluster -- --ignored --nocapture --exact deliveries_survive_a_node_loss_then_a_partition

# Installs PostgreSQL and RabbitMQ with apt-get if missing, configures their loopback logins, starts
# them and waits until they answer (deploy/local/ensure-services.sh).
services:
	deploy/local/ensure-services.sh

# Installs the pinned schemathesis unless it is already there.
schemathesis:
	deploy/local/ensure-schemathesis.sh

# Installs the pinned kubernetes-validate and jsonschema unless they are already there.
kubernetes-validate:
	deploy/local/ensure-kubernetes-validate.sh

# Installs the Python publishing example's pinned packages and generates its protobuf classes from
# proto/, unless the requirements and the .proto files are those of the last install.
python-publisher:
	deploy/local/ensure-python-publisher.sh

# Installs Debian's chromium and chromium-driver (the dashboard's browser tests) unless present.
browser:
	deploy/local/ensure-browser.sh

# Installs Debian's prometheus and promtool (crates/fp-testkit/tests/observability.rs) unless present.
prometheus:
	deploy/local/ensure-prometheus.sh

# Installs the interpreters of the verification kit's test (crates/fp-testkit/tests/verifying_webhooks.rs):
# Debian's php-cli, nodejs, golang-go, ruby and python3, each only if missing.
verifiers:
	deploy/local/ensure-verifiers.sh

run:
	deploy/local/run.sh

# The performance harness of issue #6 (bench/README.md): release builds of the services it runs,
# then the real pipeline under load; the table goes to the terminal, the JSON to bench/results/.
# The binary is run directly: `cargo run -p fp-bench` would unify features differently and build
# the dependencies a second time.
# BENCH_ARGS adds driver flags, e.g. `make bench BENCH_ARGS="--dispatchers 2 --events 100000"`.
.PHONY: bench
BENCH_ARGS ?=
bench: services
	$(CARGO) build --release -p fp-api -p fp-dispatcher -p fp-log-ingest -p fpctl -p fp-bench --bins
	$${CARGO_TARGET_DIR:-target}/release/fp-bench --profile release $(BENCH_ARGS)

# rustfmt, clippy, then the dependency audit.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(MAKE) --no-print-directory audit

# The dependency audit: the pinned cargo-audit (deploy/local/ensure-cargo-audit.sh installs it under
# target/tools/cargo-audit) checks Cargo.lock against the RustSec advisory database in the folder
# FP_ADVISORY_DB, a copy of github.com/rustsec/advisory-db, as it is (no fetch, however old). By
# default that is the snapshot in ../shared/advisory-db beside the repository when it exists (its
# SNAPSHOT.txt names the commit); otherwise, or with `make audit FP_ADVISORY_DB=`, cargo-audit fetches
# the current database from GitHub into ~/.cargo/advisory-db. Vulnerabilities and unsound advisories
# fail; unmaintained crates are printed as warnings (see README.md, Dependency audit).
.PHONY: audit
FP_ADVISORY_DB ?= $(if $(wildcard $(CURDIR)/../shared/advisory-db/crates),$(abspath $(CURDIR)/../shared/advisory-db))
audit:
	cargo_audit="$$(deploy/local/ensure-cargo-audit.sh)" && "$$cargo_audit" audit --deny unsound \
		$(if $(FP_ADVISORY_DB),--db '$(FP_ADVISORY_DB)' --no-fetch --stale)

fmt:
	$(CARGO) fmt --all
