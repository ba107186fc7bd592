#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the dashboard's browser tests
# (crates/fp-testkit/tests/dashboard_browser.rs) unless /usr/bin/chromium and /usr/bin/chromedriver
# are both there. Idempotent; says what it did. `make test` and `.ci/run` call it. The tests never
# download a browser of their own: this distribution package is the only one they use.
#
# Runs apt-get non-interactively, through sudo when not root, and `apt-get update` only when the
# package lists do not know chromium or an install from them fails. Exits non-zero, saying why, when
# the browser cannot be installed.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
    echo "ensure-browser: $("$CHROMEDRIVER" --version 2>/dev/null | head -n1 || echo chromedriver) and chromium already installed"
    exit 0
fi

fail() {
    cat >&2 <<MSG
ensure-browser: $1
The dashboard's browser tests need Debian's headless Chromium and its WebDriver:
  sudo apt-get update && sudo apt-get install -y chromium chromium-driver
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
    "${as_root[@]}" apt-get install -y chromium chromium-driver
}
apt_update() {
    echo "ensure-browser: apt-get update"
    "${as_root[@]}" apt-get update || fail "apt-get update failed."
}

# Without package lists (a fresh container) apt knows no candidate; only then update first.
if ! apt-cache policy chromium chromium-driver 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_update
fi
echo "ensure-browser: installing chromium and chromium-driver"
if ! apt_install; then
    # Stale lists name files the mirror no longer has: refresh once and try again.
    apt_update
    apt_install || fail "apt-get install chromium chromium-driver failed."
fi

[[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]] ||
    fail "the packages installed, but $CHROMIUM or $CHROMEDRIVER is still missing."
echo "ensure-browser: installed $("$CHROMEDRIVER" --version | head -n1)"
