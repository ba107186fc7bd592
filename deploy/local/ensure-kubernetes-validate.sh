#!/usr/bin/env bash
# Installs the pinned kubernetes-validate (PyPI, the Kubernetes API schemas) and jsonschema (for the
# operators' CRD schemas, deploy/kubernetes/check-crds.py) into a venv under target/ for the static
# checks of deploy/kubernetes/ (crates/fp-testkit/tests/deploy_files.rs), unless those exact
# versions are already there, and prints the path of the venv's python. Inside target/ a clean
# clone installs them fresh and `cargo clean` removes them. `make test` runs this and passes the
# path to the test as FP_KUBERNETES_PYTHON.
#
# PYTHON names the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VALIDATE_VERSION=1.32.0
JSONSCHEMA_VERSION=4.23.0
PYTHON="${PYTHON:-python3}"
VENV="$PWD/target/tools/kubernetes-validate"

installed_version() {
    "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true
}

installed() {
    [[ "$(installed_version kubernetes-validate)" == "$KUBERNETES_VALIDATE_VERSION" &&
        "$(installed_version jsonschema)" == "$JSONSCHEMA_VERSION" ]]
}

if installed; then
    echo "$VENV/bin/python"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating a Python venv for kubernetes-validate at $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION and jsonschema==$JSONSCHEMA_VERSION into $VENV" >&2
# Progress and errors go to stderr so stdout is only the path.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "jsonschema==$JSONSCHEMA_VERSION" >&2

if ! installed; then
    echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION and jsonschema $JSONSCHEMA_VERSION did not install into $VENV" >&2
    exit 1
fi
echo "$VENV/bin/python"
