#!/usr/bin/env bash
# Backlog drain: 100,000 commands queued for 10,000 offline devices (persistent sessions, primed and
# disconnected before the producers start), then every device reconnects at once. Reports the time
# from the reconnect until every command reached its device and was acknowledged, against the
# pacing-optimal time ((commands per device - 1) x dispatch.interval_ms). The raw broker baseline runs
# after each Drover phase (3 repetitions unless repeat=1): there the broker itself holds the backlog in
# the sessions and drains it without pacing.
# Usage: loadtest/scenarios/backlog.sh [drover-load key=value ...]
source "$(dirname "$0")/lib.sh"
INTERVAL=${LT_INTERVAL:-2000}
lt_start_servers
lt_start_drover dispatch.interval_ms="$INTERVAL" cluster.shards=64
lt_load mode=both devices=10000 device.per_proc=2500 device.backlog=1 device.clean=0 producers=4 \
    commands=100000 duration_s=600 drain_s=900 timeout_s=3600 interval_ms="$INTERVAL" "$@"
lt_cpu_report
lt_metrics
lt_service_warnings
