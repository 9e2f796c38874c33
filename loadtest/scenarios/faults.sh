#!/usr/bin/env bash
# Unreliable devices: 500 devices that drop 20 % of their acks, answer after 200 ms and report 30 % of
# commands COMPLETED. Drover must re-send unacknowledged commands with the same id (the devices count
# the duplicates and do not execute them twice) and still deliver and notify everything.
# Usage: loadtest/scenarios/faults.sh [drover-load key=value ...]
source "$(dirname "$0")/lib.sh"
lt_start_servers
lt_start_drover dispatch.interval_ms=0 dispatch.ack_timeout_ms=1000 dispatch.retry_max_ms=4000 cluster.shards=64
lt_load mode=drover devices=500 producers=2 commands=5000 device.ack_loss_pct=20 device.ack_delay_ms=200 \
    device.complete_pct=30 duration_s=60 drain_s=120 interval_ms=0 "$@"
lt_cpu_report
lt_metrics
lt_service_warnings
