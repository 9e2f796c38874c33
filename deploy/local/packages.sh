# shellcheck shell=bash
# Shared by deploy/local/drover-local and tests/run: installs the Debian packages named in the given
# list files (one package per line, '#' comments) when, and only when, some are missing.
# Usage: source deploy/local/packages.sh; dr_ensure_packages FILE...
# Runs apt-get through sudo when not root. Returns non-zero with a message naming the missing packages
# when it cannot install them.

dr_ensure_packages() {
    local missing=() pkg file
    if ! command -v dpkg-query >/dev/null; then
        echo "drover: dpkg-query not found; this needs Debian 12 or Ubuntu (the packages are listed in $*)" >&2
        return 1
    fi
    for file in "$@"; do
        [[ -r $file ]] || { echo "drover: package list $file not found" >&2; return 1; }
        while read -r pkg; do
            pkg=${pkg%%#*}
            pkg=${pkg//[[:space:]]/}
            [[ -z $pkg ]] && continue
            [[ " ${missing[*]} " == *" $pkg "* ]] && continue
            if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
                missing+=("$pkg")
            fi
        done <"$file"
    done
    ((${#missing[@]} == 0)) && return 0
    local sudo=()
    if ((EUID != 0)); then
        if ! command -v sudo >/dev/null; then
            echo "drover: missing Debian packages: ${missing[*]}" >&2
            echo "drover: not running as root and sudo is not installed: install them as root with" >&2
            echo "        apt-get install --no-install-recommends ${missing[*]}" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    echo "drover: installing missing Debian packages: ${missing[*]}" >&2
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
        ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >&2; then
        echo "drover: could not install ${missing[*]} with ${sudo[*]:+sudo }apt-get (see above); install them" >&2
        echo "        by hand: apt-get install --no-install-recommends ${missing[*]}" >&2
        return 1
    fi
}
