#!/usr/bin/env bash
# console-vendor.sh: puts the third-party browser code of the web console into a vendor folder, at
# setup time (nothing of it is kept in the repository). The ingress serves the folder, set as
# http.vendor_dir, under /vendor/ (docs/console.md):
#   <dir>/chart.js/    Debian's libjs-chart.js (installed with apt when missing), for the dashboard
#   <dir>/swagger-ui/  npm's swagger-ui-dist, for /swagger-ui.html
#
# Usage: deploy/local/console-vendor.sh [DIR]   (default: $DROVER_VENDOR_DIR, else .drover/vendor)
# Environment: DROVER_SWAGGER_UI_VERSION (default 5) picks the swagger-ui-dist release; npm's own cache
# and registry settings apply. Running it again is cheap: it only fetches what is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${1:-${DROVER_VENDOR_DIR:-$ROOT/.drover/vendor}}
SWAGGER_VERSION=${DROVER_SWAGGER_UI_VERSION:-5}
CHART_SRC=/usr/share/javascript/chart.js

say() { printf 'console-vendor: %s\n' "$*"; }
die() { printf 'console-vendor: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

# Chart.js from Debian: a copy, not a link, so the folder still works when handed to another host.
if [[ ! -r $CHART_SRC/chart.min.js ]]; then
    # shellcheck source=packages.sh
    source "$ROOT/deploy/local/packages.sh"
    list=$(mktemp)
    trap 'rm -f "$list"' EXIT
    echo libjs-chart.js >"$list"
    dr_ensure_packages "$list" || die "could not install libjs-chart.js"
fi
[[ -r $CHART_SRC/chart.min.js ]] || die "libjs-chart.js is installed but $CHART_SRC/chart.min.js is missing"
mkdir -p "$DIR/chart.js"
cp -f "$CHART_SRC/chart.min.js" "$CHART_SRC/chart.js" "$DIR/chart.js/"
say "chart.js ready in $DIR/chart.js"

# swagger-ui-dist from npm, installed into a scratch prefix inside the vendor folder; only the files
# the page loads are copied out.
if [[ ! -r $DIR/swagger-ui/swagger-ui-bundle.js || ! -r $DIR/swagger-ui/swagger-ui.css ]]; then
    command -v npm >/dev/null || die "npm is needed for swagger-ui-dist (Debian package npm, or Node.js)"
    work=$DIR/.npm-swagger
    rm -rf "$work"
    mkdir -p "$work"
    say "installing swagger-ui-dist@$SWAGGER_VERSION with npm"
    if ! npm install --prefix "$work" --no-audit --no-fund --no-save --loglevel=error \
        "swagger-ui-dist@$SWAGGER_VERSION" >"$work.log" 2>&1; then
        cat "$work.log" >&2
        die "npm install swagger-ui-dist failed"
    fi
    src=$work/node_modules/swagger-ui-dist
    mkdir -p "$DIR/swagger-ui"
    for f in swagger-ui-bundle.js swagger-ui.css favicon-32x32.png package.json LICENSE; do
        [[ -e $src/$f ]] && cp -f "$src/$f" "$DIR/swagger-ui/"
    done
    rm -rf "$work" "$work.log"
    [[ -r $DIR/swagger-ui/swagger-ui-bundle.js ]] || die "swagger-ui-dist did not contain swagger-ui-bundle.js"
fi
say "swagger-ui ready in $DIR/swagger-ui"
