#!/usr/bin/env bash
# Memory: (1) Redis bytes per queued command beyond its payload: 50,000 commands queued for 1,000
# devices that never connect (used_memory before and after, minus the stored command and data bytes);
# (2) ingress and dispatcher RSS against the number of devices with work: 1,000, then 10,000, then
# 50,000 offline devices with one queued command each.
# ack_timeout is an hour so the run measures queued commands, not re-send churn.
# Usage: loadtest/scenarios/memory.sh [drover-load key=value ...]   e.g. payload=16
source "$(dirname "$0")/lib.sh"
lt_start_servers
lt_start_drover dispatch.ack_timeout_ms=3600000 dispatch.retry_max_ms=3600000 cluster.shards=1024
common=(mode=drover device.offline_pct=100 producers=4 wait_accept_only=1 duration_s=600 drain_s=600 "$@")

used() { lt_redis info memory | awk -F: '/^used_memory:/ {print $2+0}'; }
# Mean stored payload (command + data bytes) of the message hashes, from a sample of 500.
payload_bytes() {
    lt_redis --scan --pattern 'dr:m:*' | head -500 | while read -r k; do
        echo "$(lt_redis hstrlen "$k" cmd) $(lt_redis hstrlen "$k" data)"
    done | awk '{s += $1 + $2; n++} END {if (n) printf "%.1f", s / n; else print 0}'
}
sleep 2
before=$(used)
echo "== queued commands: 50000 commands for 1000 offline devices"
lt_load "${common[@]}" prefix=mq devices=1000 commands=50000 | grep -E '^(==|commands|throughput)'
sleep 3 # one metrics flush and dispatch pass later
after=$(used)
pay=$(payload_bytes || true)
awk -v b="$before" -v a="$after" -v p="$pay" -v n=50000 'BEGIN {
    printf "redis used_memory: before %d, after %d, delta %.0f B/command; stored payload %.1f B/command; overhead %.0f B/command\n",
        b, a, (a - b) / n, p, (a - b) / n - p }'
# Where the bytes are: one message hash and its history list, the queue of one device, and the
# status log stream (capped at 100,000 entries, so a constant at scale).
m=$(lt_redis --scan --pattern 'dr:m:*' | head -1 || true)
h=${m/dr:m:/dr:h:}
q=$(lt_redis --scan --pattern 'dr:q:*' | head -1 || true)
echo "message hash $m: $(lt_redis memory usage "$m") B ($(lt_redis object encoding "$m")), history $h: $(lt_redis memory usage "$h") B"
qt=$(lt_redis type "$q")
case $qt in zset) qn=$(lt_redis zcard "$q") ;; list) qn=$(lt_redis llen "$q") ;; stream) qn=$(lt_redis xlen "$q") ;; *) qn='?' ;; esac
echo "queue $q: $(lt_redis memory usage "$q") B for $qn entries ($qt)"
echo "status log dr:log: $(lt_redis memory usage dr:log) B for $(lt_redis xlen dr:log) entries"
echo "keys: $(lt_redis dbsize)"

echo "== RSS against devices with work (one queued command each, cumulative)"
printf '%-22s %12s %12s %14s %14s %12s\n' devices_with_work ingress_kB dispatcher_kB ingress_peak dispatcher_peak redis_MB
printf '%-22s %12s %12s %14s %14s %12.1f\n' "0 (+ 1000 above)" "$(lt_rss_kb "$INGRESS_PID")" "$(lt_rss_kb "$DISPATCHER_PID")" \
    "$(lt_hwm_kb "$INGRESS_PID")" "$(lt_hwm_kb "$DISPATCHER_PID")" "$(echo "$(used) / 1048576" | bc -l)"
total=0
for n in 1000 9000 40000; do
    lt_load "${common[@]}" prefix="mr$n" devices="$n" device.per_proc=9000 commands="$n" >/dev/null
    total=$((total + n))
    sleep 3
    printf '%-22s %12s %12s %14s %14s %12.1f\n' "$total (+ 1000 above)" "$(lt_rss_kb "$INGRESS_PID")" \
        "$(lt_rss_kb "$DISPATCHER_PID")" "$(lt_hwm_kb "$INGRESS_PID")" "$(lt_hwm_kb "$DISPATCHER_PID")" \
        "$(echo "$(used) / 1048576" | bc -l)"
done
lt_cpu_report
lt_service_warnings
