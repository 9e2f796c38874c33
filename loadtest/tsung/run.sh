#!/usr/bin/env bash
# Runs loadtest/tsung/drover.xml against a private Drover stack (see ../scenarios/lib.sh) and prints
# tsung's own statistics. Needs the Debian package tsung (apt-get install --no-install-recommends tsung).
# Environment: TSUNG_DEVICES (1000), TSUNG_PRODUCERS (10), TSUNG_RATE (commands/s per producer, 20),
# TSUNG_SECONDS (sending time, 60).
source "$(dirname "$0")/../scenarios/lib.sh"
command -v tsung >/dev/null || { echo "tsung is not installed" >&2; exit 2; }
DEVICES=${TSUNG_DEVICES:-1000} PRODUCERS=${TSUNG_PRODUCERS:-10} RATE=${TSUNG_RATE:-20} SECONDS_=${TSUNG_SECONDS:-60}
CONNECT_RATE=200
CONNECT_S=$(((DEVICES + CONNECT_RATE - 1) / CONNECT_RATE + 1))
lt_start_servers
lt_start_drover dispatch.interval_ms=0 cluster.shards=64
sed -e "s/@PORT@/$MQTT_PORT/" -e "s/@DEV_PW@/$DEV_PW/" -e "s/@PROD_PW@/$PROD_PW/" \
    -e "s/@DEVICES@/$DEVICES/g" -e "s/@PRODUCERS@/$PRODUCERS/g" -e "s/@PER_PRODUCER@/$RATE/" \
    -e "s/@PER_PRODUCER_TOTAL@/$((RATE * SECONDS_))/" -e "s/@THINK_S@/$(awk -v r="$RATE" 'BEGIN {printf "%.3f", 1 / r}')/" \
    -e "s/@CONNECT_S@/$CONNECT_S/" -e "s/@CONNECT_RATE@/$CONNECT_RATE/" -e "s/@WAIT_S@/$((SECONDS_ + 30))/" \
    -e "s/@DURATION@/$((CONNECT_S + SECONDS_ + 40))/" \
    "$(dirname "$0")/drover.xml" >"$LT_DIR/tsung.xml"
# tsung wants a writable home for its Erlang node and logs.
HOME=$LT_DIR timeout $((CONNECT_S + SECONDS_ + 120)) tsung -f "$LT_DIR/tsung.xml" -l "$LT_DIR/tsung-log" start
log=$(ls -d "$LT_DIR"/tsung-log/*/ | head -1)
echo "== tsung statistics (last dump of $log/tsung.log)"
# Each dump ends with the cumulative counters; show the last one.
awk '/^# stats: dump at/ {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$log/tsung.log"
lt_cpu_report
lt_metrics
lt_service_warnings
