#!/usr/bin/env bash
# Installs the pinned cargo-audit (crates.io) under target/tools/cargo-audit for the dependency audit
# of `make lint` (`make audit`), unless that exact version is already there, and prints the path of
# its binary. Inside target/ a clean clone installs it fresh and `cargo clean` removes it. The first
# install compiles it from source (a few minutes on two cores).
#
# cargo-audit rather than cargo-deny: the audit only needs RustSec advisories, and cargo-audit reads
# an advisory database from any folder (`--db <folder> --no-fetch`), such as a plain copy of
# github.com/rustsec/advisory-db that is not a git checkout, with no configuration file in the
# repository. cargo-deny wants its deny.toml and keeps its databases as git checkouts under its own
# `db-path`, which suits machines that fetch from GitHub; its licence and ban checks are not needed
# here.
#
# CARGO names cargo (default cargo).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=0.22.2
CARGO="${CARGO:-cargo}"
ROOT="$PWD/target/tools/cargo-audit"
BIN="$ROOT/bin/cargo-audit"

installed_version() {
    # cargo install records what it installed under --root in .crates.toml; this reads it back.
    "$CARGO" install --list --root "$ROOT" 2>/dev/null | sed -n 's/^cargo-audit v\([^:]*\):$/\1/p'
}

if [[ -x "$BIN" && "$(installed_version)" == "$VERSION" ]]; then
    echo "$BIN"
    exit 0
fi

echo "installing cargo-audit $VERSION into $ROOT (compiles it, a few minutes)" >&2
mkdir -p "$ROOT"
# --locked builds with the versions cargo-audit's own Cargo.lock pins. Progress and errors go to
# stderr so stdout is only the path.
"$CARGO" install --locked --version "$VERSION" --root "$ROOT" cargo-audit >&2

if [[ "$(installed_version)" != "$VERSION" || ! -x "$BIN" ]]; then
    echo "cargo-audit $VERSION did not install into $ROOT" >&2
    exit 1
fi
echo "$BIN"
