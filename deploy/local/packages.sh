# Shared by deploy/local/drover-local and tests/run: installs the Debian packages named in the given
# list files (one package per line, '#' comments) when, and only when, some are missing.
# Usage: source deploy/local/packages.sh; dr_ensure_packages FILE...

dr_ensure_packages() {
    local missing=() pkg file
    for file in "$@"; do
        [[ -r $file ]] || { echo "drover: package list $file not found" >&2; return 1; }
        while read -r pkg; do
            pkg=${pkg%%#*}
            pkg=${pkg//[[:space:]]/}
            [[ -z $pkg ]] && continue
            if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
                missing+=("$pkg")
            fi
        done <"$file"
    done
    ((${#missing[@]} == 0)) && return 0
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || {
            echo "drover: missing packages: ${missing[*]}; run as root or install sudo" >&2
            return 1
        }
        sudo=(sudo)
    fi
    echo "drover: installing missing Debian packages: ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}
