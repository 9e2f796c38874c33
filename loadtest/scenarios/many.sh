#!/usr/bin/env bash
# Many connected devices: 10,000 devices (four worker processes of 2,500 MQTT connections each, since
# paho has one receive thread per process and a process may hold at most 20,000 sockets), a fixed
# command rate, default 2 s pacing. Shows connection set-up time and whether Drover keeps up at that
# scale. Usage: loadtest/scenarios/many.sh [drover-load key=value ...]   e.g. devices=15000
source "$(dirname "$0")/lib.sh"
lt_start_servers
lt_start_drover cluster.shards=256
lt_load mode=both devices=10000 device.per_proc=2500 producers=4 producer.rate=300 commands=30000 \
    duration_s=120 drain_s=120 interval_ms=2000 "$@"
echo "rss kB: ingress $(lt_rss_kb "$INGRESS_PID") (peak $(lt_hwm_kb "$INGRESS_PID")), dispatcher $(lt_rss_kb "$DISPATCHER_PID") (peak $(lt_hwm_kb "$DISPATCHER_PID")), mosquitto $(lt_rss_kb "$MOSQUITTO_PID")"
lt_cpu_report
lt_metrics
lt_service_warnings
