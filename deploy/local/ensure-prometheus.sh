#!/usr/bin/env bash
# Installs Debian's prometheus (with promtool) for the metrics test
# (crates/fp-testkit/tests/observability.rs) unless /usr/bin/prometheus and /usr/bin/promtool are
# both there. Idempotent; says what it did. `make test` and `.ci/run` call it. The test runs its own
# Prometheus process with a config in a temporary directory; the package's system service is not
# used (and not started: this machine runs no init system).
#
# Installs through apt-install.sh; exits non-zero, saying why, when it cannot be installed.
set -euo pipefail

PROMETHEUS=/usr/bin/prometheus
PROMTOOL=/usr/bin/promtool

if [[ -x "$PROMETHEUS" && -x "$PROMTOOL" ]]; then
    echo "ensure-prometheus: $("$PROMETHEUS" --version 2>&1 | head -n1) already installed"
    exit 0
fi

# shellcheck source=apt-install.sh
. "$(dirname "$0")/apt-install.sh"
hint="The metrics test needs Debian's Prometheus and promtool:
  sudo apt-get update && sudo apt-get install -y prometheus"
# No recommends: the node exporter and the rest are not what the test needs.
apt_install_packages ensure-prometheus "$hint" --no-install-recommends -- prometheus

[[ -x "$PROMETHEUS" && -x "$PROMTOOL" ]] ||
    apt_fail ensure-prometheus "$hint" "the package installed, but $PROMETHEUS or $PROMTOOL is still missing."
echo "ensure-prometheus: installed $("$PROMETHEUS" --version 2>&1 | head -n1)"
