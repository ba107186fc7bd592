#!/usr/bin/env bash
# Installs Debian's prometheus (with promtool) for the metrics test
# (crates/fp-testkit/tests/observability.rs) unless /usr/bin/prometheus and /usr/bin/promtool are
# both there. Idempotent; says what it did. `make test` and `.ci/run` call it. The test runs its own
# Prometheus process with a config in a temporary directory; the package's system service is not
# used (and not started: this machine runs no init system).
#
# Runs apt-get non-interactively, through sudo when not root, and `apt-get update` only when the
# package lists do not know prometheus or an install from them fails. Exits non-zero, saying why,
# when it cannot be installed.
set -euo pipefail

PROMETHEUS=/usr/bin/prometheus
PROMTOOL=/usr/bin/promtool

if [[ -x "$PROMETHEUS" && -x "$PROMTOOL" ]]; then
    echo "ensure-prometheus: $("$PROMETHEUS" --version 2>&1 | head -n1) already installed"
    exit 0
fi

fail() {
    cat >&2 <<MSG
ensure-prometheus: $1
The metrics test needs Debian's Prometheus and promtool:
  sudo apt-get update && sudo apt-get install -y prometheus
MSG
    exit 1
}

command -v apt-get >/dev/null || fail "apt-get is not available on this machine."
if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    fail "installing packages needs root (or password-less sudo)."
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    # No recommends: the node exporter and the rest are not what the test needs.
    "${as_root[@]}" apt-get install -y --no-install-recommends prometheus
}
apt_update() {
    echo "ensure-prometheus: apt-get update"
    "${as_root[@]}" apt-get update || fail "apt-get update failed."
}

if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_update
fi
echo "ensure-prometheus: installing prometheus"
if ! apt_install; then
    apt_update
    apt_install || fail "apt-get install prometheus failed."
fi

[[ -x "$PROMETHEUS" && -x "$PROMTOOL" ]] ||
    fail "the package installed, but $PROMETHEUS or $PROMTOOL is still missing."
echo "ensure-prometheus: installed $("$PROMETHEUS" --version 2>&1 | head -n1)"
