#!/usr/bin/env bash
# Installs the interpreters of the verification kit's test (crates/fp-testkit/tests/verifying_webhooks.rs,
# which runs docs/verifying-webhooks/ in each language) from Debian's packages, only those missing:
# php (php-cli), node (nodejs), go (golang-go), ruby (ruby) and python3 (python3). Idempotent; says
# what it did. `make test` calls it. The test fails, not skips, when one is missing.
#
# Installs through apt-install.sh; exits non-zero, saying why, when they cannot be installed.
set -euo pipefail

# command, then the Debian package that provides it
commands=(php node go ruby python3)
packages=(php-cli nodejs golang-go ruby python3)

missing=()
for index in "${!commands[@]}"; do
    command -v "${commands[$index]}" >/dev/null || missing+=("${packages[$index]}")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "ensure-verifiers: php, node, go, ruby and python3 already installed"
    exit 0
fi

# shellcheck source=apt-install.sh
. "$(dirname "$0")/apt-install.sh"
hint="The verification kit's test runs docs/verifying-webhooks/ with Debian's interpreters:
  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
# No recommends: documentation and extra tools the test does not need.
apt_install_packages ensure-verifiers "$hint" --no-install-recommends -- "${missing[@]}"

for name in "${commands[@]}"; do
    command -v "$name" >/dev/null ||
        apt_fail ensure-verifiers "$hint" "the packages installed, but $name is still missing."
done
echo "ensure-verifiers: installed ${missing[*]}"
