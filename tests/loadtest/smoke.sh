#!/usr/bin/env bash
# The benchmark tools still work with this build: a tiny steady run (real Redis, NATS, Mosquitto, one
# ingress and one dispatcher, 20 simulated devices, 300 commands) must deliver and acknowledge every
# command with nothing lost, and redis_cost.py must take every command through its whole life against
# the function library. Nothing here is timed: figures come from the full benchmarks (docs/benchmarks.md).
# Usage: tests/loadtest/smoke.sh BIN_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export DROVER_BIN=${1:?usage: smoke.sh BIN_DIR}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

/usr/bin/python3 "$ROOT/loadtest/redis_cost.py" --devices 50 --per-device 3 --memory >"$out" 2>&1 ||
    { cat "$out"; echo "smoke: redis_cost.py failed"; exit 1; }
grep -q "150 of 150 commands went through" "$out" || { cat "$out"; echo "smoke: redis_cost.py lost commands"; exit 1; }

"$ROOT/loadtest/scenarios/steady.sh" mode=drover devices=20 commands=300 duration_s=20 drain_s=20 repeat=1 \
    >"$out" 2>&1 || { cat "$out"; echo "smoke: steady.sh failed"; exit 1; }
for want in "commands: sent 300, accepted 300, rejected 0, send errors 0, delivered to devices 300, DELIVERED notified 300" \
            "losses at end: accepted but never at an online device 0, answered but no DELIVERED 0, sent but never accepted 0, receipt/device id mismatches 0"; do
    grep -qF "$want" "$out" || { cat "$out"; echo "smoke: expected: $want"; exit 1; }
done
if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$out"; then
    cat "$out"; echo "smoke: sanitizer report"; exit 1
fi

# The backlog path of the device workers: persistent sessions primed, disconnected while every command
# is queued, reconnected; answers delayed (the workers' ack timer).
LT_INTERVAL=200 "$ROOT/loadtest/scenarios/backlog.sh" mode=drover devices=20 device.per_proc=8 commands=100 producers=2 \
    drain_s=30 device.ack_delay_ms=20 repeat=1 >"$out" 2>&1 || { cat "$out"; echo "smoke: backlog.sh failed"; exit 1; }
for want in "commands: sent 100, accepted 100, rejected 0, send errors 0, delivered to devices 100, DELIVERED notified 100" \
            "losses at end: accepted but never at an online device 0, answered but no DELIVERED 0, sent but never accepted 0, receipt/device id mismatches 0" \
            "device sessions primed and disconnected"; do
    grep -qF "$want" "$out" || { cat "$out"; echo "smoke: backlog: expected: $want"; exit 1; }
done
if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$out"; then
    cat "$out"; echo "smoke: backlog: sanitizer report"; exit 1
fi
echo "smoke: benchmark tools ok"
