# shellcheck shell=bash
# scripts/lib_mq_cluster.sh: a 3-node RabbitMQ cluster beside a stack's own
# broker, started the way lib.sh starts that one (its mq_* functions, run
# in a subshell per node with the node's variables), for the cluster fault
# test (tests/e2e/test_cluster_broker.c) and for trying a cluster by hand.
# Sourced by lib.sh; reached through `scripts/ctl cluster ...`.
#
# Everything lives under STACK_DIR/mq-cluster: cookie (one Erlang cookie for
# all nodes), nodeN/ (each node's MQ_DIR: home/, mnesia/, config); the
# nodes' logs go to STACK_DIR/logs/mq-cluster/nodeN.
# The nodes share one epmd of their own. Ports derive from the stack's AMQP
# port, so stacks with different ports never share one (test: 57672 gives
# 57700-57760):
#
#   node N (1..3)   AMQP    B + 20(N-1)        B = AMQP_PORT + 28
#                   mgmt    B + 20(N-1) + 1    management API
#                   dist    B + 20(N-1) + 10   Erlang distribution, CLI +1..+9
#   epmd            B + 60
#
# Each node's rabbitmq.conf adds net_ticktime = 10: a node frozen (or its
# host hung) is declared down by the others after 10-12.5 s, and a queue
# it led gets a new leader. And cluster_partition_handling = pause_minority:
# a node cut off from the others pauses instead of running on as a second
# cluster. A node that was frozen past net_ticktime cannot pause while
# frozen, and once thawed every node sees a majority: the partition stays
# recorded until that node is restarted (mqc_node_stop, mqc_node_start), which
# the test does. autoheal would restart it by itself, but with 3.10.8 on a
# loaded machine its state machine stuck after a few heals in a row ("mnesia
# in nodes [...] is still up, sending winner notification again").
# The queue gets a member on every node only if it is declared after the
# nodes joined: run `bulkreg-admin migrate` after `mqc_start`.

MQC_NODES=3

# mqc_init: MQC_DIR, MQC_BASE, MQC_EPMD_PORT of this stack.
mqc_init() {
    MQC_DIR=$STACK_DIR/mq-cluster
    MQC_BASE=$((AMQP_PORT + 28))
    MQC_EPMD_PORT=$((MQC_BASE + 60))
    ((MQC_EPMD_PORT <= 65535)) || die "AMQP port $AMQP_PORT leaves no room for the cluster's ports"
}

# mqc_node N: make this (sub)shell's RabbitMQ variables those of node N, so
# that lib.sh's mq_start, mq_stop, mq_ctl and mq_pid act on it.
# shellcheck disable=SC2034 # the variables are lib.sh's, read by its mq_* functions
mqc_node() {
    local n=$1 first
    ((n >= 1 && n <= MQC_NODES)) || die "no cluster node $n (1..$MQC_NODES)"
    mqc_init
    first=$((MQC_BASE + 20 * (n - 1)))
    AMQP_PORT=$first
    MQ_MGMT_PORT=$((first + 1))
    MQ_DIST_PORT=$((first + 10))
    EPMD_PORT=$MQC_EPMD_PORT
    MQ_DIR=$MQC_DIR/node$n
    LOG_DIR=$STACK_DIR/logs/mq-cluster/node$n   # kept with the stack's logs
    # net_ticktime: a node that stops answering (frozen, its host hung) is
    # declared down by the others after 10-15 s instead of 60-75 s; until
    # then a queue whose leader it is has no leader. Connections show in the
    # management API within a second (the test finds each process's node).
    MQ_CONF_EXTRA='cluster_partition_handling = pause_minority
net_ticktime = 10
collect_statistics_interval = 1000'
}

# mqc_node_prepare N: mqc_node N, and the node's name and the cluster's cookie in place.
mqc_node_prepare() {
    mqc_node "$1"
    mkdir -p -- "$MQ_DIR/home" "$LOG_DIR"
    printf '%s\n' "$(mqc_nodename "$1")" >"$MQ_DIR/nodename"
    # One cookie for the cluster; mq_prepare keeps a cookie that exists.
    if [[ ! -s $MQ_DIR/home/.erlang.cookie ]]; then
        install -m 400 -- "$MQC_DIR/cookie" "$MQ_DIR/home/.erlang.cookie"
    fi
}

mqc_nodename() { printf 'bulkreg-c%s-%s@localhost\n' "$1" "$(stack_hash)"; }

# mqc_urls: AMQP_URL for the cluster (every node), then on a second line
# BULKREG_MQ_MANAGEMENT_URL.
mqc_urls() {
    mqc_init
    local n first amqp='' mgmt=''
    for ((n = 1; n <= MQC_NODES; n++)); do
        first=$((MQC_BASE + 20 * (n - 1)))
        amqp+="${amqp:+,}amqp://guest:guest@127.0.0.1:$first/"
        mgmt+="${mgmt:+,}http://127.0.0.1:$((first + 1))"
    done
    printf '%s\n%s\n' "$amqp" "$mgmt"
}

# mqc_node_start N / mqc_node_stop N: start or stop one node (its data kept;
# a node that was in the cluster rejoins it by itself).
mqc_node_start() { (mqc_node_prepare "$1"; mq_start); }
mqc_node_stop() {
    (
        mqc_node "$1"
        local pid
        pid=$(mq_pid)
        [[ -n $pid ]] && kill -CONT "$pid" 2>/dev/null   # a frozen node cannot stop
        mq_stop
    )
}

# mqc_pid N: node N's beam pid, if it runs (for SIGKILL / SIGSTOP).
mqc_pid() { (mqc_node "$1"; mq_pid); }

# mqc_ctl N ARGS...: rabbitmqctl against node N.
mqc_ctl() { (local n=$1; shift; mqc_node "$n"; mq_ctl "$@"); }

# mqc_start: start the three nodes (in parallel), join 2 and 3 to 1, wait
# until all three run as one cluster. A no-op for nodes already running.
mqc_start() {
    mqc_init
    mkdir -p -- "$MQC_DIR"
    if [[ ! -s $MQC_DIR/cookie ]]; then
        (umask 077; od -An -N20 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F' >"$MQC_DIR/cookie")
    fi
    ports_reserve "$MQC_BASE-$MQC_EPMD_PORT"
    local n rc=0
    local -a pids=()
    for ((n = 1; n <= MQC_NODES; n++)); do
        mqc_node_start "$n" &
        pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n" || rc=1; done
    ((rc == 0)) || die "a cluster node did not start (logs: $STACK_DIR/logs/mq-cluster)"
    local first
    first=$(mqc_nodename 1)
    for ((n = 2; n <= MQC_NODES; n++)); do
        if mqc_ctl "$n" -q cluster_status 2>/dev/null | grep -qF "$first"; then
            continue   # joined on an earlier start
        fi
        log "joining cluster node $n to $first"
        mqc_ctl "$n" -q stop_app >/dev/null
        mqc_ctl "$n" -q join_cluster "$first" >/dev/null
        mqc_ctl "$n" -q start_app >/dev/null
    done
    mqc_wait_formed
}

# mqc_wait_formed: every node answers `rabbitmq-diagnostics ping` and node
# 1 sees all of them running; dies after START_TIMEOUT.
mqc_wait_formed() {
    local n deadline=$((SECONDS + START_TIMEOUT))
    for ((n = 1; n <= MQC_NODES; n++)); do
        until (mqc_node "$n"; mq_resolve; mq_env "$MQ_BIN/rabbitmq-diagnostics" -n "$MQ_NODENAME" -q ping \
            >/dev/null 2>&1); do
            ((SECONDS < deadline)) || die "cluster node $n does not answer ping"
            sleep 0.5
        done
    done
    mqc_ctl 1 -q await_online_nodes "$MQC_NODES" --timeout "$START_TIMEOUT" >/dev/null ||
        die "the cluster did not form: $(mqc_ctl 1 cluster_status 2>&1 | head -n 30)"
    log "RabbitMQ cluster of $MQC_NODES nodes running (AMQP $MQC_BASE, +20, +40)"
}

# mqc_stop: stop every node (thawing a frozen one first), keep nothing.
mqc_stop() {
    mqc_init
    [[ -d $MQC_DIR ]] || return 0
    local n rc=0
    for ((n = 1; n <= MQC_NODES; n++)); do
        [[ -d $MQC_DIR/node$n ]] && { mqc_node_stop "$n" || rc=1; }
    done
    ((rc == 0)) && rm -rf -- "$MQC_DIR"
    return "$rc"
}

# mqc_status: one line per node: N NODENAME AMQP_PORT MGMT_PORT PID (or -).
mqc_status() {
    local n
    for ((n = 1; n <= MQC_NODES; n++)); do
        (
            mqc_node "$n"
            mq_resolve
            local pid
            pid=$(mq_pid)
            printf '%s %s %s %s %s\n' "$n" "$MQ_NODENAME" "$AMQP_PORT" "$MQ_MGMT_PORT" "${pid:--}"
        )
    done
}

# mqc_main ARGS...: `scripts/ctl cluster ARGS...`.
mqc_main() {
    case ${1:-} in
        start) mqc_start ;;
        stop) mqc_stop ;;
        status) mqc_status ;;
        urls) mqc_urls ;;
        start-node) mqc_node_start "${2:?node}" ;;
        stop-node) mqc_node_stop "${2:?node}" ;;
        pid) mqc_pid "${2:?node}" ;;
        rabbitmqctl) shift; mqc_ctl "${1:?node}" "${@:2}" ;;
        *) die "usage: scripts/ctl cluster start|stop|status|urls|start-node N|stop-node N|pid N|rabbitmqctl N ARGS..." ;;
    esac
}
