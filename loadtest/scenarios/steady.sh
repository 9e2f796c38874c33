#!/usr/bin/env bash
# Steady throughput: 1,000 connected devices, producers as fast as accepted, Drover pacing off
# (dispatch.interval_ms=0) so throughput is what is measured; the raw broker baseline runs first with
# the same devices, producers and client library, and the ratio is printed at the end.
# Usage: loadtest/scenarios/steady.sh [drover-load key=value ...]   e.g. commands=50000 producers=8
# LT_DROVER="key=value ..." adds Drover settings (e.g. dispatch.window=4); LT_FSYNC=everysec changes
# Redis durability (for comparison only: Drover's guarantee needs appendfsync always).
source "$(dirname "$0")/lib.sh"
lt_start_servers
# shellcheck disable=SC2086
lt_start_drover dispatch.interval_ms=0 dispatch.tick_ms=20 cluster.shards=64 ${LT_DROVER:-}
lt_load mode=both devices=1000 producers=4 commands=30000 duration_s=120 drain_s=60 interval_ms=0 "$@"
lt_cpu_report
lt_metrics
lt_service_warnings
