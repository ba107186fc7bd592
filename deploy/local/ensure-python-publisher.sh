#!/usr/bin/env bash
# Installs the Python publishing example (examples/python-publisher) into a venv under target/ for its
# test (crates/fp-testkit/tests/python_publisher.rs): the pinned packages of its requirements.txt
# (pika, protobuf, grpcio-tools) and the protobuf classes generated from proto/ by grpcio-tools'
# bundled protoc, on the venv's path. It does nothing when the requirements and the .proto files are
# those of the last install, and prints the path of the venv's python. Inside target/ a clean clone
# installs it fresh and `cargo clean` removes it. `make test` runs this and passes the path to the
# test as FP_PUBLISHER_PYTHON.
#
# PYTHON names the interpreter (default python3; publish.py needs >= 3.10).
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-python3}"
VENV="$PWD/target/tools/python-publisher"
GENERATED="$VENV/generated"
REQUIREMENTS=examples/python-publisher/requirements.txt
PROTOS=(proto/feedbackpulse/v1/events.proto)
# What the install was made from: a changed pin or .proto file installs again.
STAMP="$VENV/installed-from.sha256"

wanted_stamp() {
    cat "$REQUIREMENTS" "${PROTOS[@]}" | sha256sum | cut -d' ' -f1
}

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$(wanted_stamp)" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating a Python venv for the publishing example at $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$STAMP"
echo "installing $REQUIREMENTS into $VENV" >&2
# Progress and errors go to stderr so stdout is only the path.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2

echo "generating the protobuf classes of ${PROTOS[*]} into $GENERATED" >&2
rm -rf "$GENERATED"
mkdir -p "$GENERATED"
# grpc_tools.protoc adds the well-known types (google/protobuf/timestamp.proto) to the include path.
"$VENV/bin/python" -m grpc_tools.protoc --proto_path=proto --python_out="$GENERATED" "${PROTOS[@]}" >&2
# A .pth file puts the generated package on the venv's path: `from feedbackpulse.v1 import events_pb2`.
"$VENV/bin/python" -c 'import sys, sysconfig; open(sysconfig.get_path("purelib") + "/feedbackpulse-generated.pth", "w").write(sys.argv[1] + "\n")' "$GENERATED"

if ! "$VENV/bin/python" -c 'import pika; from feedbackpulse.v1 import events_pb2' 2>/dev/null; then
    echo "the publishing example's packages or generated classes did not install into $VENV" >&2
    exit 1
fi
wanted_stamp >"$STAMP"
echo "$VENV/bin/python"
