#!/usr/bin/env bash
# emqtt-bench scenarios for Drover's MQTT interface, for users who have emqtt_bench installed
# (it cannot be built on machines without access to its git dependencies, so it is not part of the
# project's own runs; drover-load is). Runs against a broker that a Drover stack uses, e.g. one
# started by deploy/local/drover-local or loadtest/scenarios/lib.sh.
#
# Usage: loadtest/emqtt-bench/drover.sh devices|produce|both
# Environment: MQTT_HOST (127.0.0.1), MQTT_PORT (1883), DEV_USER/DEV_PW, PROD_USER/PROD_PW,
#   DEVICES (1000), PRODUCERS (10), INTERVAL_MS (interval between commands of one producer, 50),
#   LIMIT (commands per producer, 1000), EMQTT_BENCH (emqtt_bench)
#
# emqtt-bench devices only subscribe (they cannot answer with the received message id), so Drover keeps
# re-sending every command after dispatch.ack_timeout_ms. The "produce" numbers are the broker's PUBACKs:
# MQTT acknowledges hop by hop, so the broker answers the producer at once, before Drover has the
# command; they measure the broker, not durable acceptance (that is the NOT_DELIVERED status message
# Drover publishes once the command is stored). The "devices" numbers are first deliveries. drover-load
# measures the receipt and the full cycle.
set -euo pipefail
B=${EMQTT_BENCH:-emqtt_bench}
H=${MQTT_HOST:-127.0.0.1} P=${MQTT_PORT:-1883}
DEVICES=${DEVICES:-1000} PRODUCERS=${PRODUCERS:-10} INTERVAL_MS=${INTERVAL_MS:-50} LIMIT=${LIMIT:-1000}
case $H in 127.0.0.1 | localhost | ::1) ;; *) echo "loopback only" >&2; exit 2 ;; esac
command -v "$B" >/dev/null || { echo "$B not found (set EMQTT_BENCH)" >&2; exit 2; }

devices() {
    # One connection per device, client ids ebd-1..ebd-N, each on its own consumer/request topic.
    "$B" sub -h "$H" -p "$P" -u "${DEV_USER:-dev}" -P "${DEV_PW:?}" -c "$DEVICES" -i 5 \
        --prefix ebd- -t 'consumer/request/ebd-%i' -q 1
}

produce() {
    # Producer i sends LIMIT Duster-format commands to device ebd-i (i = 1..PRODUCERS), one every INTERVAL_MS.
    timeout 600 "$B" pub -h "$H" -p "$P" -u "${PROD_USER:-prod}" -P "${PROD_PW:?}" -c "$PRODUCERS" -i 10 \
        --prefix ebp- -t 'producer/request/ebd-%i' -q 1 -I "$INTERVAL_MS" -L "$((LIMIT * PRODUCERS))" \
        -m '{"believerGuarantee":"RECEIPT_CONFIRMATION","command":"emqtt-bench","data":{"n":1}}'
}

case ${1:-both} in
devices) devices ;;
produce) produce ;;
both)
    devices &
    dev_pid=$!
    trap 'kill "$dev_pid" 2>/dev/null || true' EXIT
    sleep $((DEVICES / 200 + 2))
    produce
    ;;
*) echo "usage: $0 devices|produce|both" >&2; exit 2 ;;
esac
