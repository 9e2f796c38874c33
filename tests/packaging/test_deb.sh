#!/bin/sh
# Builds the drover Debian package (deploy/debian/build-deb) and checks it without installing it on
# this machine: its file list and control data, lintian's verdict, systemd's reading of the units, and
# the binaries and units unpacked into a scratch root (dpkg-deb -x), where the binaries must accept the
# shipped drover.conf and the unit's command line must read the per-instance file.
#
# Usage: tests/packaging/test_deb.sh            Exit 0: all checks pass; 1: a check failed;
#                                               77: dpkg-buildpackage or debhelper missing (skipped).
# Prints one "ok"/"FAIL" line per check and "N passed, N failed" at the end.
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v dpkg-buildpackage >/dev/null || ! command -v dh >/dev/null; then
    echo "skip: dpkg-buildpackage or debhelper is not installed (deploy/local/packages-test.txt)"
    exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/drover-test-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND...: the command's exit status decides
    what=$1
    shift
    if "$@" >"$work/out" 2>&1; then ok "$what"; else fail "$what: $(tail -n 5 "$work/out" | tr '\n' ' ')"; fi
}

# ---- build --------------------------------------------------------------------------------------

if ! "$root/deploy/debian/build-deb" "$work/out-deb" >"$work/build.log" 2>&1; then
    cat "$work/build.log"
    fail "dpkg-buildpackage -b -uc -us"
    echo "$passed passed, $failed failed"
    exit 1
fi
deb=$(ls "$work"/out-deb/drover_*.deb | head -n 1)
ok "dpkg-buildpackage -b -uc -us built $(basename "$deb")"

# ---- contents -----------------------------------------------------------------------------------

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$work/files"
for f in /usr/bin/drover-ingress /usr/bin/drover-dispatcher /usr/bin/drover-ctl \
    /lib/systemd/system/drover-ingress@.service /lib/systemd/system/drover-dispatcher@.service \
    /etc/drover/drover.conf /usr/share/doc/drover/copyright /usr/share/drover/console/login.html \
    /usr/share/drover/console/dashboard.js; do
    check "the package holds $f" grep -qx "$f" "$work/files"
done
check "the device simulator (a development tool) is not shipped" sh -c "! grep -q drover-device-sim '$work/files'"
check "the console's chart library comes from Debian's package" sh -c "dpkg-deb -f '$deb' Depends | grep -q libjs-chart.js"

mkdir -p "$work/ctl"
dpkg-deb -e "$deb" "$work/ctl"
check "/etc/drover/drover.conf is a conffile" grep -qx /etc/drover/drover.conf "$work/ctl/conffiles"
dpkg-deb -f "$deb" Depends >"$work/depends"
for lib in libh2o libhiredis libnats libuv1 libjansson4 libssl3 adduser; do
    check "Depends names $lib (shlibs)" grep -q "$lib" "$work/depends"
done
flat=$(tr -d '\\\n' <"$work/ctl/postinst")
check "postinst creates the system user drover" sh -c 'printf "%s" "$1" | grep -Eq "adduser --system --group .*\"Drover services\" drover"' sh "$flat"
check "postinst runs only on configure" grep -q '"\$1" = "configure"' "$work/ctl/postinst"
check "postrm removes the user on purge" sh -c "grep -q '\"\$1\" = \"purge\"' '$work/ctl/postrm' && grep -q 'deluser --system' '$work/ctl/postrm'"
for s in postinst postrm; do
    check "$s is valid sh" sh -n "$work/ctl/$s"
done

# ---- unpacked into a scratch root ---------------------------------------------------------------

sr="$work/root"
dpkg-deb -x "$deb" "$sr"
for b in drover-ingress drover-dispatcher; do
    check "$b --help accepts the shipped drover.conf" "$sr/usr/bin/$b" -c "$sr/etc/drover/drover.conf" --help
done
check "drover-ctl --help runs" "$sr/usr/bin/drover-ctl" -c "$sr/etc/drover/drover.conf" --help

# The units' ExecStart, with its paths moved into the scratch root and --help appended: without a
# per-instance file it must succeed; a per-instance file with a bad value must then make it fail,
# which proves the file is read.
for svc in ingress dispatcher; do
    unit="$sr/lib/systemd/system/drover-$svc@.service"
    line=$(sed -n 's/^ExecStart=\/bin\/sh -c //p' "$unit")
    script=$(printf '%s' "$line" | sed -e "s/^'//" -e "s/'\$//" -e 's/\$\$/$/g' -e 's/%i/n1/g' \
        -e "s|/etc/drover|$sr/etc/drover|g" -e "s|/usr/bin|$sr/usr/bin|g" -e 's/"\$@"$/"$@" --help/')
    if [ -z "$line" ]; then
        fail "drover-$svc@.service has an ExecStart=/bin/sh -c line"
        continue
    fi
    check "drover-$svc@n1: the unit's command line starts $svc with drover.conf" env DR_NODE_ID=n1 sh -c "$script"
    printf 'http.port = 99999\n' >"$sr/etc/drover/$svc-n1.conf"
    check "drover-$svc@n1: the unit's command line reads /etc/drover/$svc-n1.conf" sh -c "! env DR_NODE_ID=n1 sh -c '$script'"
    rm -f "$sr/etc/drover/$svc-n1.conf"
    for opt in 'User=drover' 'Restart=on-failure' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
        'Environment=DR_NODE_ID=%i' 'StandardError=journal'; do
        check "drover-$svc@.service sets $opt" grep -qx "$opt" "$unit"
    done
done

# ---- tools, when installed ----------------------------------------------------------------------

if command -v systemd-analyze >/dev/null; then
    mkdir -p "$work/units"
    for svc in ingress dispatcher; do
        cp "$sr/lib/systemd/system/drover-$svc@.service" "$work/units/"
        ln -s "drover-$svc@.service" "$work/units/drover-$svc@n1.service"
        # verify exits 0 even on parse errors: any message other than the note about root counts.
        systemd-analyze verify "$work/units/drover-$svc@n1.service" >"$work/verify" 2>&1
        if grep -v 'running with root privileges' "$work/verify" | grep -q .; then
            fail "systemd-analyze verify drover-$svc@n1.service: $(cat "$work/verify" | tr '\n' ' ')"
        else
            ok "systemd-analyze verify drover-$svc@n1.service"
        fi
    done
else
    echo "note: systemd-analyze not installed: the units were not verified"
fi

if command -v lintian >/dev/null; then
    # Tags accepted on purpose (docs/operations.md, "Packages and images"):
    #   no-manual-page   the binaries document themselves with --help and docs/configuration.md.
    lintian --no-tag-display-limit "$deb" >"$work/lintian" 2>&1
    grep -E '^[EW]: ' "$work/lintian" | grep -v ': no-manual-page ' >"$work/lintian.bad"
    if [ -s "$work/lintian.bad" ]; then
        fail "lintian: $(tr '\n' ' ' <"$work/lintian.bad")"
    else
        ok "lintian: no errors, no warnings beyond no-manual-page ($(grep -c '^[EWI]: ' "$work/lintian") tags in all)"
    fi
else
    echo "note: lintian not installed: the package was not linted"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
