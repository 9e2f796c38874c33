# Shared by the scenario scripts: starts a private Drover stack on random loopback ports in a temporary
# directory and removes it on exit. Sourced, not executed.
#
# Environment:
#   DROVER_BIN   directory with drover-ingress, drover-dispatcher and drover-load
#                (default: build/release/bin of this checkout)
#   LT_KEEP=1    keep the temporary directory (logs, configs) after the run
#   LT_INGRESS=N, LT_DISPATCHERS=M   run N ingress and M dispatcher nodes (default 1 each)
#   LT_JSON      append every phase summary as a JSON line to this file
#   LT_FSYNC, LT_LISTPACK_VALUE  override Redis appendfsync / hash-max-listpack-value for comparisons
#                (Redis otherwise runs with deploy/local/redis-common.conf, as drover-local does)
#   LT_REDIS_LATENCY=ms  record Redis events (fsync, commands) and commands slower than ms, and print
#                them at the end (LATENCY LATEST, SLOWLOG): what a latency tail came from
#
# drover-load is told the PIDs of every server and Drover process (cpu.pids) and counts broker
# messages over Mosquitto's $SYS tree (sys_interval 1 here), so each phase reports CPU per command
# and broker messages per command.
#
# Every process started here is remembered by PID and stopped by PID in the EXIT trap: nothing is
# killed by name, so a scenario can run next to other stacks on the same machine.

set -euo pipefail

LT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${DROVER_BIN:-$LT_ROOT/build/release/bin}
LT_DIR=$(mktemp -d /tmp/drover-lt.XXXXXX)
LT_PIDS=()
REDIS_PID= NATS_PID= MOSQUITTO_PID= INGRESS_PID= DISPATCHER_PID=
LT_CPU_PIDS=() # name=pid of every process whose CPU drover-load accounts
LT_REDIS_CONF=$LT_ROOT/deploy/local/redis-common.conf

for b in drover-ingress drover-dispatcher drover-load; do
    [[ -x $BIN/$b ]] || { echo "lt: $BIN/$b not found; build first or set DROVER_BIN" >&2; exit 2; }
done
for b in redis-server redis-cli nats-server mosquitto mosquitto_passwd; do
    command -v "$b" >/dev/null || { echo "lt: $b is not installed" >&2; exit 2; }
done
[[ -r $LT_REDIS_CONF ]] || { echo "lt: $LT_REDIS_CONF not found" >&2; exit 2; }

lt_cleanup() {
    local rc=$? pid i
    # Newest first and one at a time: Drover stops before the servers it depends on.
    for ((i = ${#LT_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${LT_PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ ${LT_KEEP:-0} == 1 ]]; then
        echo "lt: logs kept in $LT_DIR" >&2
    else
        rm -rf "$LT_DIR"
    fi
    return $rc
}
trap lt_cleanup EXIT
trap 'exit 130' INT TERM

lt_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

lt_wait_port() {
    local port=$1
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "lt: nothing listens on port $port" >&2
    return 1
}

lt_secret() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# lt_start_servers: redis-server with the configuration drover-local ships (deploy/local/redis-common.conf:
# AOF with appendfsync always, as in production), nats-server and mosquitto (password file, no anonymous
# access, $SYS counters every second).
lt_start_servers() {
    REDIS_PORT=$(lt_port) NATS_PORT=$(lt_port) MQTT_PORT=$(lt_port)
    REDIS_PW=$(lt_secret) NATS_PW=$(lt_secret) SVC_PW=$(lt_secret) DEV_PW=$(lt_secret) PROD_PW=$(lt_secret)
    mkdir -p "$LT_DIR/redis" "$LT_DIR/mq"
    local redis_over=()
    [[ -n ${LT_FSYNC:-} ]] && redis_over+=(--appendfsync "$LT_FSYNC")
    [[ -n ${LT_LISTPACK_VALUE:-} ]] && redis_over+=(--hash-max-listpack-value "$LT_LISTPACK_VALUE")
    [[ -n ${LT_REDIS_LATENCY:-} ]] && redis_over+=(--latency-monitor-threshold "$LT_REDIS_LATENCY" \
        --slowlog-log-slower-than "$((LT_REDIS_LATENCY * 1000))" --slowlog-max-len 64)
    redis-server "$LT_REDIS_CONF" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$LT_DIR/redis" \
        --requirepass "$REDIS_PW" --logfile "$LT_DIR/redis.log" "${redis_over[@]}" &
    REDIS_PID=$!
    LT_PIDS+=("$REDIS_PID")
    LT_CPU_PIDS+=("redis=$REDIS_PID")
    nats-server -a 127.0.0.1 -p "$NATS_PORT" --user drover --pass "$NATS_PW" -l "$LT_DIR/nats.log" &
    NATS_PID=$!
    LT_PIDS+=("$NATS_PID")
    mosquitto_passwd -c -b "$LT_DIR/mq/pw" svc "$SVC_PW" 2>/dev/null
    mosquitto_passwd -b "$LT_DIR/mq/pw" dev "$DEV_PW" 2>/dev/null
    mosquitto_passwd -b "$LT_DIR/mq/pw" prod "$PROD_PW" 2>/dev/null
    # mosquitto drops root privileges to its own user, which must be able to read the password file.
    chmod 755 "$LT_DIR" "$LT_DIR/mq"
    chmod 644 "$LT_DIR/mq/pw"
    cat >"$LT_DIR/mq/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous false
password_file $LT_DIR/mq/pw
persistence false
max_queued_messages 1000000
max_inflight_messages ${LT_MQ_INFLIGHT:-1000}
set_tcp_nodelay true
max_connections -1
sys_interval 1
log_dest stderr
log_type error
log_type warning
log_type notice
EOF
    mosquitto -c "$LT_DIR/mq/mosquitto.conf" 2>"$LT_DIR/mosquitto.log" &
    MOSQUITTO_PID=$!
    LT_PIDS+=("$MOSQUITTO_PID")
    LT_CPU_PIDS+=("nats=$NATS_PID" "mosquitto=$MOSQUITTO_PID")
    lt_wait_port "$REDIS_PORT"
    lt_wait_port "$NATS_PORT"
    lt_wait_port "$MQTT_PORT"
    for _ in $(seq 50); do
        [[ $(redis-cli -p "$REDIS_PORT" -a "$REDIS_PW" --no-auth-warning ping 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
}

# lt_start_drover [key=value ...]: one ingress and one dispatcher with the given config overrides.
lt_start_drover() {
    cat >"$LT_DIR/drover.conf" <<EOF
redis.port = $REDIS_PORT
redis.password = $REDIS_PW
nats.url = nats://127.0.0.1:$NATS_PORT
nats.user = drover
nats.password = $NATS_PW
mqtt.url = tcp://127.0.0.1:$MQTT_PORT
mqtt.username = svc
mqtt.password = $SVC_PW
http.port = 0
log.level = notice
EOF
    local kv
    for kv in "$@"; do
        echo "${kv%%=*} = ${kv#*=}" >>"$LT_DIR/drover.conf"
    done
    "$BIN/drover-ingress" -c "$LT_DIR/drover.conf" --node.id=lt-in1 2>"$LT_DIR/ingress.log" &
    INGRESS_PID=$!
    LT_PIDS+=("$INGRESS_PID")
    LT_CPU_PIDS+=("ingress=$INGRESS_PID")
    "$BIN/drover-dispatcher" -c "$LT_DIR/drover.conf" --node.id=lt-dp1 2>"$LT_DIR/dispatcher.log" &
    DISPATCHER_PID=$!
    LT_PIDS+=("$DISPATCHER_PID")
    LT_CPU_PIDS+=("dispatcher=$DISPATCHER_PID")
    local i
    for ((i = 2; i <= ${LT_INGRESS:-1}; i++)); do
        "$BIN/drover-ingress" -c "$LT_DIR/drover.conf" --node.id=lt-in$i 2>"$LT_DIR/ingress-$i.log" &
        LT_PIDS+=("$!")
        LT_CPU_PIDS+=("ingress=$!")
    done
    for ((i = 2; i <= ${LT_DISPATCHERS:-1}; i++)); do
        "$BIN/drover-dispatcher" -c "$LT_DIR/drover.conf" --node.id=lt-dp$i 2>"$LT_DIR/dispatcher-$i.log" &
        LT_PIDS+=("$!")
        LT_CPU_PIDS+=("dispatcher=$!")
    done
    for _ in $(seq 100); do
        grep -q 'event=shards_owned' "$LT_DIR/dispatcher.log" 2>/dev/null &&
            grep -q 'event=mqttc_connected' "$LT_DIR/ingress.log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "lt: Drover did not become ready; logs:" >&2
    tail -5 "$LT_DIR/ingress.log" "$LT_DIR/dispatcher.log" >&2
    return 1
}

# lt_load [key=value ...]: drover-load against this stack, accounting the CPU of every process started
# here and the broker's messages.
lt_load() {
    local args=(--mqtt.url="tcp://127.0.0.1:$MQTT_PORT" --device.user=dev --device.password="$DEV_PW"
        --producer.user=prod --producer.password="$PROD_PW" --broker.sys_interval_s=1)
    args+=(--cpu.pids="$(IFS=,; echo "${LT_CPU_PIDS[*]}")")
    [[ -n ${LT_JSON:-} ]] && args+=(--json="$LT_JSON")
    local kv
    for kv in "$@"; do args+=("--$kv"); done
    "$BIN/drover-load" "${args[@]}"
}

lt_redis() { redis-cli -p "$REDIS_PORT" -a "$REDIS_PW" --no-auth-warning "$@"; }

# Resident set size and peak RSS (kB) of a process.
lt_rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
lt_hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# lt_cpu_s PID...: CPU seconds (user + sys) so far of the processes and everything below them,
# children already reaped included.
lt_cpu_s() {
    python3 - "$@" <<'EOF'
import os, sys
roots = {int(p) for p in sys.argv[1:]}
hz = os.sysconf("SC_CLK_TCK")
procs = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            f = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        procs[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]))
total = 0
for pid, (ppid, ticks) in procs.items():
    p = pid
    for _ in range(64):
        if p in roots:
            total += ticks
            break
        if p not in procs:
            break
        p = procs[p][0]
print("%.1f" % (total / hz))
EOF
}

# One line with the CPU seconds of every server and Drover process tree since it started (set-up and
# every phase), to see which one limited a run. drover-load's summaries give the same per phase and
# per command, without the set-up.
lt_cpu_report() {
    local name ing=() disp=() kv
    for kv in "${LT_CPU_PIDS[@]}"; do
        name=${kv%%=*}
        [[ $name == ingress ]] && ing+=("${kv#*=}")
        [[ $name == dispatcher ]] && disp+=("${kv#*=}")
    done
    printf 'cpu seconds since start: redis %s, nats %s, mosquitto %s, ingress %s, dispatcher %s\n' \
        "$(lt_cpu_s "$REDIS_PID")" "$(lt_cpu_s "$NATS_PID")" "$(lt_cpu_s "$MOSQUITTO_PID")" \
        "$( ((${#ing[@]})) && lt_cpu_s "${ing[@]}" || echo -)" \
        "$( ((${#disp[@]})) && lt_cpu_s "${disp[@]}" || echo -)"
}

# Drover's own counters (the metrics hashes), for the record.
lt_metrics() {
    local k
    for k in $(lt_redis --scan --pattern 'dr:metrics:*'); do
        echo "$k: $(lt_redis hgetall "$k" | paste -sd' ')"
    done
    # Redis commands by client calls (FCALL: one batch of accepts or acks, one dispatch call, ...),
    # since the server started: with the metrics above they give the commands per call.
    echo "redis client calls: $(lt_redis info commandstats | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_(fcall|xack|xadd|get|set|hset|hgetall|zrange|mget)[:]/ {printf "%s %s  ", substr($1, 9), $3}')"
    if [[ -n ${LT_REDIS_LATENCY:-} ]]; then
        echo "redis latency events over ${LT_REDIS_LATENCY} ms (event, last at, last ms, max ms):"
        lt_redis latency latest | paste -sd' ' | xargs -n4 echo " "
        echo "redis commands slower than ${LT_REDIS_LATENCY} ms (newest first: us, command, first arguments):"
        # redis-cli aligns an array of ten or more elements (an FCALL's arguments) to two-digit
        # indexes, " 4)  1) ...", hence the " +".
        lt_redis --no-raw slowlog get 20 | awk '/ 3\) +\(integer\) /{us=$NF} / 4\) +1\) "/{c=$NF; getline; print "  " us, c, $NF}'
    fi
}

# Warnings and errors the services logged during the run.
lt_service_warnings() {
    grep -hE 'level=(warning|error)' "$LT_DIR/ingress.log" "$LT_DIR/dispatcher.log" 2>/dev/null | head -${1:-20} || true
}

# lt_api_key SCOPE [DEVICE] NAME: creates a REST API key for this stack with drover-ctl and prints it
# on stdout (drover-ctl's note goes to ctl.log). Write it to a 0600 file, not onto a command line.
lt_api_key() {
    [[ -x $BIN/drover-ctl ]] || { echo "lt: $BIN/drover-ctl not found; build first or set DROVER_BIN" >&2; return 2; }
    "$BIN/drover-ctl" -c "$LT_DIR/drover.conf" key create "$@" 2>>"$LT_DIR/ctl.log"
}
