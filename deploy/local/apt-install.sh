# Sourced by the ensure-*.sh scripts that install a Debian package for the tests:
#   apt_install_packages NAME HINT APT_OPTION... -- PACKAGE...
# runs apt-get non-interactively, through sudo when not root, and `apt-get update` only when the
# package lists know no candidate (a fresh container) or an install from them fails (stale lists).
# On failure it prints "NAME: why", then HINT (what needs the packages and the command to run by
# hand), and exits 1.

apt_fail() { # name hint why
    printf '%s: %s\n%s\n' "$1" "$3" "$2" >&2
    exit 1
}

apt_install_packages() {
    local name=$1 hint=$2
    shift 2
    local options=()
    while [[ $# -gt 0 && $1 != -- ]]; do
        options+=("$1")
        shift
    done
    shift
    local packages=("$@") as_root
    command -v apt-get >/dev/null || apt_fail "$name" "$hint" "apt-get is not available on this machine."
    if [[ "$(id -u)" -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        apt_fail "$name" "$hint" "installing packages needs root (or password-less sudo)."
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache policy "${packages[@]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        echo "$name: apt-get update"
        "${as_root[@]}" apt-get update || apt_fail "$name" "$hint" "apt-get update failed."
    fi
    echo "$name: installing ${packages[*]}"
    if ! "${as_root[@]}" apt-get install -y "${options[@]}" "${packages[@]}"; then
        echo "$name: apt-get update"
        "${as_root[@]}" apt-get update || apt_fail "$name" "$hint" "apt-get update failed."
        "${as_root[@]}" apt-get install -y "${options[@]}" "${packages[@]}" ||
            apt_fail "$name" "$hint" "apt-get install ${packages[*]} failed."
    fi
}
