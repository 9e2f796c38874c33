#!/usr/bin/env bash
# Steady throughput: 1,000 connected devices, producers as fast as accepted, Drover pacing off
# (dispatch.interval_ms=0) so throughput is what is measured. Each repetition (repeat=3 by default) runs
# a Drover phase and then the raw broker baseline with the same devices, producers and client library,
# for at least as long; every phase reports CPU per command of each process and broker messages per
# command, and the end prints median and spread of the rates and ratios and the broker's ceiling.
# mode=latency instead measures the full-cycle rate and then runs at half of it for latency.
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
