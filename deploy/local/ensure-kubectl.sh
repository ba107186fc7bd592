#!/usr/bin/env bash
# Prints the path of a kubectl that can render kustomizations (`kubectl kustomize`), installing
# Debian's kubernetes-client package with apt-get if there is none. The static checks of
# deploy/kubernetes/ (crates/fp-testkit/tests/deploy_files.rs) run it; they fail, never skip,
# when it finds no kubectl. Its overlays use only kustomization fields that kubectl 1.20's
# kustomize (v2, Debian bookworm's package) also reads.
set -euo pipefail

usable() {
    "$1" kustomize --help >/dev/null 2>&1
}

if path="$(command -v kubectl)" && usable "$path"; then
    echo "$path"
    exit 0
fi

if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "no kubectl on PATH: installing Debian's kubernetes-client" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Output goes to stderr so stdout is only the path.
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client; } >&2 || true
fi

if path="$(command -v kubectl)" && usable "$path"; then
    echo "$path"
    exit 0
fi
echo "kubectl is missing and could not be installed (apt-get install kubernetes-client, as root on" \
    "Debian): install kubectl so that \`kubectl kustomize\` works" >&2
exit 1
