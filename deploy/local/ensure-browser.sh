#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the dashboard's browser tests
# (crates/fp-testkit/tests/dashboard_browser.rs) unless /usr/bin/chromium and /usr/bin/chromedriver
# are both there. Idempotent; says what it did. `make test` and `.ci/run` call it. The tests never
# download a browser of their own: this distribution package is the only one they use.
#
# Installs through apt-install.sh; exits non-zero, saying why, when the browser cannot be installed.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
    echo "ensure-browser: $("$CHROMEDRIVER" --version 2>/dev/null | head -n1 || echo chromedriver) and chromium already installed"
    exit 0
fi

# shellcheck source=apt-install.sh
. "$(dirname "$0")/apt-install.sh"
hint="The dashboard's browser tests need Debian's headless Chromium and its WebDriver:
  sudo apt-get update && sudo apt-get install -y chromium chromium-driver"
apt_install_packages ensure-browser "$hint" -- chromium chromium-driver

[[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]] ||
    apt_fail ensure-browser "$hint" "the packages installed, but $CHROMIUM or $CHROMEDRIVER is still missing."
echo "ensure-browser: installed $("$CHROMEDRIVER" --version | head -n1)"
