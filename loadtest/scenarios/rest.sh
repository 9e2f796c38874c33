#!/usr/bin/env bash
# REST producers: 1,000 connected devices as in steady.sh, but the producers submit every command with
# POST /v1/devices/{id}/messages (HTTP/1.1 keep-alive, a producer API key, one Idempotency-Key per
# command) and still hear DELIVERED over MQTT through the messageBirthCertificate. Drover pacing is off
# and the per-key rate limit is raised so that the REST path itself is measured; LT_DROVER="http.rate=200"
# restores the default limit to exercise 429 and Retry-After. One ingress node (the HTTP port is fixed).
# Usage: loadtest/scenarios/rest.sh [drover-load key=value ...]   e.g. commands=50000 rest.conns=16
source "$(dirname "$0")/lib.sh"
lt_start_servers
HTTP_PORT=$(lt_port)
# shellcheck disable=SC2086
lt_start_drover dispatch.interval_ms=0 dispatch.tick_ms=20 cluster.shards=64 http.port="$HTTP_PORT" \
    http.rate=1000000 http.burst=1000000 ${LT_DROVER:-}
lt_wait_port "$HTTP_PORT"
(umask 077 && lt_api_key producer lt-load >"$LT_DIR/producer.key")
lt_load mode=drover producer.transport=rest rest.url="http://127.0.0.1:$HTTP_PORT" \
    rest.key_file="$LT_DIR/producer.key" devices=1000 producers=4 commands=20000 duration_s=120 drain_s=60 \
    interval_ms=0 "$@"
lt_cpu_report
lt_metrics
lt_service_warnings
