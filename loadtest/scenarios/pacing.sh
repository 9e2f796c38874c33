#!/usr/bin/env bash
# Pacing: 200 connected devices, 5 commands each sent at once, default dispatch.interval_ms=2000.
# The devices measure the time between consecutive new commands; every interval should be at least the
# configured one (an ack frees the window, but never the pacing), and not much longer.
# Usage: loadtest/scenarios/pacing.sh [drover-load key=value ...]
source "$(dirname "$0")/lib.sh"
INTERVAL=${LT_INTERVAL:-2000}
lt_start_servers
lt_start_drover dispatch.interval_ms="$INTERVAL"
lt_load mode=drover devices=200 producers=2 commands=1000 duration_s=60 drain_s=60 interval_ms="$INTERVAL" "$@"
lt_service_warnings
