#!/usr/bin/env bash
# Installs the pinned schemathesis (PyPI) into a venv under target/ for the OpenAPI conformance test
# (crates/fp-testkit/tests/openapi_conformance.rs), unless that exact version is already there, and
# prints the path of its binary. Inside target/ a clean clone installs it fresh and `cargo clean`
# removes it. `make test` runs this and passes the path to the test as FP_SCHEMATHESIS.
#
# PYTHON names the interpreter (default python3; schemathesis 4 needs >= 3.10).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=4.32.5
PYTHON="${PYTHON:-python3}"
VENV="$PWD/target/tools/schemathesis"
BIN="$VENV/bin/schemathesis"

installed_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true
}

if [[ -x "$BIN" && "$(installed_version)" == "$VERSION" ]]; then
    echo "$BIN"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating a Python venv for schemathesis at $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
echo "installing schemathesis==$VERSION into $VENV" >&2
# Progress and errors go to stderr so stdout is only the path.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2

if [[ "$(installed_version)" != "$VERSION" || ! -x "$BIN" ]]; then
    echo "schemathesis $VERSION did not install into $VENV" >&2
    exit 1
fi
echo "$BIN"
