# shellcheck shell=bash
# scripts/lib.sh: helpers shared by scripts/up, scripts/down, scripts/ctl and
# scripts/test. Sourced, never run; the caller sets `set -euo pipefail`.
#
# A "stack" is one project-local PostgreSQL, RabbitMQ, API and two workers.
# Everything about it lives under STACK_DIR; nothing touches system services:
#
#   env          shell-sourceable summary (README.md), rewritten by write_env
#                whenever a pid changes so it stays true
#   config.env   §3 tunables the API/workers were last started with, reused by
#                scripts/ctl when the caller does not set them
#   demo-token   the demo organization's token (scripts/up)
#   logs/        api.log, worker-N.log, rabbitmq/ (broker logs)
#   run/         pid and port files of the API and workers
#   mq/          RabbitMQ: home/ (own .erlang.cookie), mnesia/, config, pid file
#   pg/          PostgreSQL: data/, run/ (unix socket), log/postgresql.log.
#                A symlink to /var/lib/bulkreg-local/<hash> when the PostgreSQL
#                user cannot reach STACK_DIR (e.g. the repo lives under /root)
#                or the socket path would be too long.
#
# Two profiles with disjoint default ports, so both can run at once:
#   up    scripts/up, down, ctl   STACK_DIR=${BULKREG_LOCAL_DIR:-$ROOT/.local}
#         PG 55432, AMQP 55672, Erlang dist AMQP+10 = 55682 (CLI tools:
#         dist+1..dist+9), epmd 55369, API 8080,
#         worker metrics 9101, 9102 (BULKREG_PG_PORT, BULKREG_AMQP_PORT,
#         BULKREG_MQ_DIST_PORT, BULKREG_EPMD_PORT, BULKREG_API_PORT,
#         BULKREG_WORKER_METRICS_PORT override them)
#   test  scripts/test            STACK_DIR=${BULKREG_TEST_LOCAL_DIR:-$ROOT/.local/test}
#         PG 56432, AMQP 56672, dist 56682, epmd 56369, API 28080, metrics
#         29101, 29102 (BULKREG_TEST_*_PORT override them; the plain
#         BULKREG_*_PORT variables are ignored so a shell that sourced
#         .local/env cannot make the tests collide with scripts/up)
# scripts/ctl and scripts/down take the ports recorded in STACK_DIR/env.
#
# Ports 32768-60999 are Linux's ephemeral range: an outgoing connection of any
# process may be given one of the PostgreSQL/RabbitMQ ports above as its local
# port (and keep it 60 s in TIME_WAIT), and our listener then fails with
# "address in use". So the start functions add the stack's ports to
# net.ipv4.ip_local_reserved_ports (ports_reserve), and pg_start/mq_start
# retry such a failure.

# ---------------------------------------------------------------------------
# Basics

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
MQ_BIN=/usr/lib/rabbitmq/bin
WORKER_COUNT=2
STOP_TIMEOUT=30          # seconds between SIGTERM and SIGKILL
START_TIMEOUT=${BULKREG_START_TIMEOUT:-60}   # seconds to wait for readiness
PG_FALLBACK_BASE=/var/lib/bulkreg-local

# Debian packages the project and these scripts need.
DEPS=(build-essential cmake pkg-config clang clang-format git
      librabbitmq-dev libjansson-dev libpq-dev libmicrohttpd-dev
      libcurl4-openssl-dev libidn2-dev libssl-dev libcriterion-dev
      postgresql-15 postgresql-contrib rabbitmq-server
      curl jq python3 wrk procps iproute2 util-linux passwd shellcheck)
# What scripts/test adds for the console's browser test (tests/browser/): npm
# too unless a Node.js that brings its own (NodeSource's, which conflicts with
# Debian's npm package) already provides the command.
# shellcheck disable=SC2034 # read by scripts/test
DEPS_TEST=(chromium nodejs)
command -v npm >/dev/null || DEPS_TEST+=(npm)

# Configuration variables (README.md) (not URLs or ports: those belong to the stack).
TUNABLES=(BULKREG_API_BIND BULKREG_MAX_TASKS BULKREG_MAX_BODY_BYTES
          BULKREG_WORKER_CONCURRENCY BULKREG_WORKER_PREFETCH
          BULKREG_WEBHOOK_TIMEOUT_MS BULKREG_WEBHOOK_RETRY_SCHEDULE
          BULKREG_WEBHOOK_ALLOW_PRIVATE BULKREG_RATE_LIMIT BULKREG_JOIN_URL_BASE
          BULKREG_SWEEP_INTERVAL_MS BULKREG_CONSOLE BULKREG_LOG_FORMAT BULKREG_LOG_LEVEL)

SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0")}

log()  { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die()  { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

is_root() { [[ $EUID -eq 0 ]]; }

# Show the last lines of a log file on stderr (used when something fails).
log_tail() {
    local file=$1 n=${2:-40}
    if [[ -r $file ]]; then
        printf -- '----- last %s lines of %s -----\n' "$n" "$file" >&2
        tail -n "$n" -- "$file" >&2 || true
        printf -- '-----\n' >&2
    fi
}

# Single-quote a value for a shell-sourceable file.
shquote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# Print the value NAME gets when FILE is sourced (empty if unset or no file).
# Runs in a subshell, so the caller's variables are untouched.
file_get() {
    local file=$1 name=$2
    [[ -r $file ]] || return 0
    # shellcheck source=/dev/null
    (set +eu; . "$file" >/dev/null 2>&1; printf '%s' "${!name-}")
}

# pid_alive PID PATTERN: the process exists, is not a zombie, and its command
# line contains PATTERN (guards against a recycled pid).
pid_alive() {
    local pid=$1 pattern=$2 stat cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$pattern"* ]]
}

# port_listeners PORT: the `ss` lines of TCP listeners on PORT (any address).
port_listeners() { ss -Hltnp "( sport = :$1 )" 2>/dev/null || true; }

# port_check_free PORT WHAT HINT: fail clearly if something already listens.
# Only called when our own service is known not to be running, so any
# listener belongs to someone else.
port_check_free() {
    local port=$1 what=$2 hint=$3 who
    who=$(port_listeners "$port")
    [[ -z $who ]] && return 0
    die "$what: port $port is already in use by something that is not this stack:
$who
Stop it or choose another port with $hint."
}

# ports_reserve PORT|LO-HI...: add the ports that lie in the kernel's
# ephemeral range to net.ipv4.ip_local_reserved_ports, so that no outgoing
# connection of any process is given one of them as its local port. Such a
# connection (or its 60 s TIME_WAIT) makes our listener fail with "address
# in use"; it happened in practice with the 55xxx/56xxx defaults. Only adds,
# never removes; needs root; lasts until reboot; skipped where not writable.
ports_reserve() {
    local f=/proc/sys/net/ipv4/ip_local_reserved_ports cur lo hi item a b
    is_root && [[ -w $f ]] || return 0
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range || return 0
    cur=$(<"$f")
    local -a add=()
    for item in "$@"; do
        a=${item%-*} b=${item#*-}
        ((a != 0 && b >= lo && a <= hi)) || continue
        port_reserved "$a" "$cur" && port_reserved "$b" "$cur" && continue
        add+=("$item")
    done
    ((${#add[@]})) || return 0
    local IFS=,
    if printf '%s\n' "${cur:+$cur,}${add[*]}" >"$f" 2>/dev/null; then
        log "reserved ports ${add[*]} (net.ipv4.ip_local_reserved_ports) so outgoing connections do not take them"
    fi
}

# port_reserved PORT LIST: PORT is in a kernel port list such as "1,5-9".
port_reserved() {
    local port=$1 item a b
    local -a items
    IFS=, read -r -a items <<<"$2"
    for item in "${items[@]}"; do
        a=${item%-*} b=${item#*-}
        ((port >= a && port <= b)) && return 0
    done
    return 1
}

# stack_reserve_ports: ports_reserve for every port of this stack.
stack_reserve_ports() {
    local n
    local -a ports=("$PG_PORT" "$AMQP_PORT" "$EPMD_PORT" "$API_PORT"
                    "$MQ_DIST_PORT-$((MQ_DIST_PORT + 10))")
    for ((n = 1; n <= WORKER_COUNT; n++)); do ports+=("$(worker_metrics_port "$n")"); done
    ports_reserve "${ports[@]}"
}

# wait_http URL PID PATTERN LOG: poll URL until it answers 2xx, the process dies
# or START_TIMEOUT passes.
wait_http() {
    local url=$1 pid=$2 pattern=$3 logfile=$4 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return 0
        fi
        if ! pid_alive "$pid" "$pattern"; then
            log_tail "$logfile"
            die "$pattern (pid $pid) exited before $url answered"
        fi
        sleep 0.2
    done
    log_tail "$logfile"
    die "$url did not answer within ${START_TIMEOUT}s (pid $pid still running, see $logfile)"
}

# ---------------------------------------------------------------------------
# Packages

# deps_install: install the missing Debian packages, and only those.
deps_install() {
    local pkg missing=()
    for pkg in "${DEPS[@]}"; do
        if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]} == 0)) && return 0

    log "installing missing packages: ${missing[*]}"
    local -a sudo=()
    if ! is_root; then
        command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]} first"
        sudo=(sudo)
    fi
    # The postgresql and rabbitmq-server packages may try to start their
    # system services; we neither need nor touch them.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# ---------------------------------------------------------------------------
# Stack selection

# stack_init PROFILE: set STACK_DIR, ports and URLs.
#   up        scripts/up: caller's BULKREG_*_PORT > recorded in env > defaults
#   test      scripts/test: BULKREG_TEST_*_PORT > defaults
#   existing  scripts/ctl, scripts/down: the stack recorded in
#             ${BULKREG_LOCAL_DIR:-$ROOT/.local}/env, its ports as recorded
stack_init() {
    local mode=$1 envf
    case $mode in
        up|existing) STACK_DIR=${BULKREG_LOCAL_DIR:-$ROOT/.local} ;;
        test) STACK_DIR=${BULKREG_TEST_LOCAL_DIR:-$ROOT/.local/test} ;;
        *) die "stack_init: unknown mode $mode" ;;
    esac
    STACK_DIR=$(realpath -m -- "$STACK_DIR")
    envf=$STACK_DIR/env

    STACK_MODE=$mode
    STACK_PROFILE=$mode
    if [[ $mode == existing ]]; then
        STACK_PROFILE=$(file_get "$envf" STACK_PROFILE)
        if [[ -z $STACK_PROFILE ]]; then
            STACK_PROFILE=up
            [[ $STACK_DIR == "$ROOT/.local/test" ]] && STACK_PROFILE='test'
        fi
    fi

    local d_pg d_amqp d_epmd d_api d_metrics
    if [[ $STACK_PROFILE == test ]]; then
        d_pg=56432 d_amqp=56672 d_epmd=56369 d_api=28080 d_metrics=29101
    else
        d_pg=55432 d_amqp=55672 d_epmd=55369 d_api=8080 d_metrics=9101
    fi

    local p=BULKREG_
    [[ $STACK_PROFILE == test ]] && p=BULKREG_TEST_
    stack_pick PG_PORT "${p}PG_PORT" "$d_pg" PG_PORT
    stack_pick AMQP_PORT "${p}AMQP_PORT" "$d_amqp" AMQP_PORT
    # Erlang distribution: AMQP + 10 unless set (RabbitMQ's own default,
    # AMQP + 20000, overflows for high AMQP ports). The CLI tools use the 9
    # ports above it.
    stack_pick MQ_DIST_PORT "${p}MQ_DIST_PORT" $((AMQP_PORT + 10)) MQ_DIST_PORT
    ((MQ_DIST_PORT + 10 <= 65535)) || die "${p}MQ_DIST_PORT: $MQ_DIST_PORT leaves no room for the CLI ports above it"
    # The management API (for the queue's members): the port after the CLI's.
    MQ_MGMT_PORT=$((MQ_DIST_PORT + 10))
    stack_pick EPMD_PORT "${p}EPMD_PORT" "$d_epmd" EPMD_PORT
    stack_pick API_PORT "${p}API_PORT" "$d_api" API_PORT
    stack_pick WORKER_METRICS_BASE "${p}WORKER_METRICS_PORT" "$d_metrics" BULKREG_WORKER_METRICS_PORT

    BIN_DIR=${BULKREG_BIN_DIR:-$ROOT/build/bin}
    LOG_DIR=$STACK_DIR/logs
    RUN_DIR=$STACK_DIR/run
    MQ_DIR=$STACK_DIR/mq
    TOKEN_FILE=$STACK_DIR/demo-token

    stack_urls
    config_load
}

# stack_pick VAR CALLER_VAR DEFAULT RECORDED_VAR: set VAR following the
# precedence of STACK_MODE (see stack_init); RECORDED_VAR is its name in env.
stack_pick() {
    local var=$1 caller=$2 def=$3 recorded=$4 val=''
    case $STACK_MODE in
        up) val=${!caller-}
            [[ -n $val ]] || val=$(file_get "$STACK_DIR/env" "$recorded") ;;
        test) val=${!caller-} ;;
        existing) val=$(file_get "$STACK_DIR/env" "$recorded") ;;
    esac
    [[ -n $val ]] || val=$def
    if ! [[ $val =~ ^[0-9]+$ ]] || ((val > 65535)); then
        die "$caller: not a port number: $val"
    fi
    printf -v "$var" '%s' "$val"
}

# stack_urls: derive the URLs from the current ports.
stack_urls() {
    DATABASE_URL="postgresql://bulkreg@127.0.0.1:$PG_PORT/bulkreg"
    AMQP_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
    BULKREG_MQ_MANAGEMENT_URL="http://127.0.0.1:$MQ_MGMT_PORT"
    local host=${BULKREG_API_BIND:-127.0.0.1}
    case $host in 0.0.0.0|'::'|'[::]'|'') host=127.0.0.1 ;; esac
    [[ $host == *:* && $host != \[* ]] && host="[$host]"
    API_URL="http://$host:$API_PORT"
}

# Short, stable id of this stack (names the RabbitMQ node, the pg fallback).
stack_hash() { printf '%s' "$STACK_DIR" | sha256sum | cut -c1-10; }

stack_dirs() {
    mkdir -p -- "$STACK_DIR" "$LOG_DIR" "$RUN_DIR"
}

# config_load: export the recorded §3 tunables the caller did not set.
config_load() {
    local f=$STACK_DIR/config.env name val
    [[ -r $f ]] || return 0
    for name in "${TUNABLES[@]}"; do
        [[ -n ${!name+x} ]] && continue
        val=$(file_get "$f" "$name")
        [[ -n $val ]] && export "$name=$val"
    done
    return 0
}

# config_save: record the §3 tunables the API/workers are being started with.
config_save() {
    local f=$STACK_DIR/config.env name
    {
        printf '# §3 settings the API/workers of this stack were started with.\n'
        printf '# scripts/ctl reuses them when its caller does not set them.\n'
        for name in "${TUNABLES[@]}"; do
            [[ -n ${!name+x} ]] && printf 'export %s=%s\n' "$name" "$(shquote "${!name}")"
        done
    } >"$f.tmp"
    mv -f -- "$f.tmp" "$f"
}

# ---------------------------------------------------------------------------
# PostgreSQL

# The user PostgreSQL runs as: initdb refuses root, so root uses a dedicated
# system user; anyone else runs it as themselves.
pg_user() {
    if is_root; then echo bulkreg; else id -un; fi
}

# pg_run CMD...: run CMD as the PostgreSQL user, from / (the caller's working
# directory may not be readable by that user).
pg_run() {
    if is_root; then
        (cd / && runuser -u bulkreg -- "$@")
    else
        (cd / && "$@")
    fi
}

pg_ensure_user() {
    is_root || return 0
    id -u bulkreg >/dev/null 2>&1 && return 0
    log "creating system user bulkreg (runs the project-local PostgreSQL)"
    useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bulkreg
}

# pg_resolve: set PG_BASE/PG_DATA/PG_SOCKDIR/PG_LOG. With "create", decide
# where the data goes the first time: inside STACK_DIR when the PostgreSQL
# user can reach it and the socket path fits (unix sockets are limited to
# ~107 bytes), else under $PG_FALLBACK_BASE with STACK_DIR/pg a symlink to it.
pg_resolve() {
    local link=$STACK_DIR/pg
    if [[ -L $link ]]; then
        PG_BASE=$(readlink -- "$link")
    elif [[ -d $link || ${1:-} != create ]]; then
        PG_BASE=$link
    else
        local sock="$link/run/.s.PGSQL.$PG_PORT"
        if ((${#sock} <= 100)) && pg_run test -x "$STACK_DIR" && pg_run test -r "$STACK_DIR"; then
            PG_BASE=$link
            mkdir -p -- "$PG_BASE"
        else
            PG_BASE=$PG_FALLBACK_BASE/$(stack_hash)
            log "PostgreSQL data goes to $PG_BASE ($(pg_user) cannot use $STACK_DIR); $link links to it"
            mkdir -p -- "$PG_BASE"
            chmod 755 -- "$PG_FALLBACK_BASE"
            ln -sfn -- "$PG_BASE" "$link"
        fi
        chown "$(pg_user):" -- "$PG_BASE"
        chmod 700 -- "$PG_BASE"
    fi
    PG_DATA=$PG_BASE/data
    PG_SOCKDIR=$PG_BASE/run
    PG_LOG=$PG_BASE/log/postgresql.log
}

pg_running() {
    pg_resolve
    [[ -f $PG_DATA/PG_VERSION ]] || return 1
    pg_run "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# psql as the superuser over TCP (trust auth, loopback only).
pg_admin_psql() {
    PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 \
        -p "$PG_PORT" -U postgres -d postgres "$@"
}

# pg_write_conf: our settings, rewritten on every start so a changed port
# applies. postgresql.conf includes this file (added once by initdb step).
pg_write_conf() {
    cat >"$PG_DATA/bulkreg.conf" <<EOF
# Written by scripts/lib.sh on every start of this stack; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKDIR'
max_connections = 300
shared_buffers = 256MB
# Durability is a product guarantee: never turn these off, even locally.
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
EOF
    chown "$(pg_user):" -- "$PG_DATA/bulkreg.conf"
}

# pg_start: initialise (first time), start, create role and database bulkreg.
# A no-op when this stack's server already runs (its port is then adopted).
pg_start() {
    [[ -x $PG_BIN/pg_ctl ]] || die "PostgreSQL 15 not found in $PG_BIN (run deps_install)"
    stack_dirs
    stack_reserve_ports
    pg_ensure_user
    pg_resolve create

    if pg_running; then
        local port
        port=$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true)
        if [[ $port =~ ^[0-9]+$ && $port != "$PG_PORT" ]]; then
            warn "PostgreSQL of this stack already runs on port $port (not $PG_PORT); keeping it"
            PG_PORT=$port
            stack_urls
        fi
        log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    else
        port_check_free "$PG_PORT" PostgreSQL BULKREG_PG_PORT
        if [[ ! -f $PG_DATA/PG_VERSION ]]; then
            log "initialising PostgreSQL in $PG_DATA"
            pg_run "$PG_BIN/initdb" -D "$PG_DATA" --auth=trust --username=postgres \
                -E UTF8 --locale=C >"$STACK_DIR/logs/initdb.log" 2>&1 ||
                { log_tail "$STACK_DIR/logs/initdb.log"; die "initdb failed"; }
            printf "\ninclude = 'bulkreg.conf'\n" >>"$PG_DATA/postgresql.conf"
        fi
        pg_run mkdir -p "$PG_SOCKDIR" "$(dirname "$PG_LOG")"
        pg_write_conf
        local attempt offset
        for attempt in 1 2 3; do
            log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
            offset=$(stat -c %s -- "$PG_LOG" 2>/dev/null || echo 0)
            # 9>&-: the postmaster must not inherit scripts/test's lock.
            if pg_run "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" \
                start >/dev/null 9>&-; then
                break
            fi
            # As for RabbitMQ: our port is in the ephemeral range, so an
            # outgoing connection may hold it for a moment.
            if tail -c +"$((offset + 1))" -- "$PG_LOG" | grep -q 'Address already in use' &&
                ((attempt < 3)); then
                warn "PostgreSQL could not bind port $PG_PORT (in use for a moment?); trying again"
                sleep 1
                port_check_free "$PG_PORT" PostgreSQL BULKREG_PG_PORT
                continue
            fi
            log_tail "$PG_LOG"
            die "PostgreSQL did not start (log: $PG_LOG)"
        done
    fi

    # Role and database for the application: LOGIN CREATEDB, not superuser.
    if [[ -z $(pg_admin_psql -tAc "select 1 from pg_roles where rolname = 'bulkreg'") ]]; then
        pg_admin_psql -c 'create role bulkreg login createdb'
    fi
    if [[ -z $(pg_admin_psql -tAc "select 1 from pg_database where datname = 'bulkreg'") ]]; then
        pg_admin_psql -c 'create database bulkreg owner bulkreg'
    fi
}

pg_stop() {
    if ! pg_running; then
        return 0
    fi
    log "stopping PostgreSQL"
    pg_run "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$START_TIMEOUT" stop >/dev/null ||
        { log_tail "$PG_LOG"; die "PostgreSQL did not stop"; }
}

# ---------------------------------------------------------------------------
# RabbitMQ
#
# Run from /usr/lib/rabbitmq/bin directly (the /usr/sbin wrappers switch to
# the rabbitmq user and /var/lib/rabbitmq). Everything is per stack: node
# name, data, logs, config, Erlang cookie (via HOME), the Erlang distribution
# port, the CLI's distribution ports and an own epmd (ERL_EPMD_PORT), so the
# system epmd on 4369 and a system broker are never touched.

mq_resolve() {
    MQ_PIDFILE=$MQ_DIR/rabbitmq.pid
    MQ_LAUNCHER_PIDFILE=$MQ_DIR/launcher.pid
    MQ_NODENAME=$(cat "$MQ_DIR/nodename" 2>/dev/null || true)
    if [[ -z $MQ_NODENAME ]]; then
        MQ_NODENAME="bulkreg-$STACK_PROFILE-$(stack_hash)@localhost"
    fi
}

# mq_env_init: fill MQ_ENV, the `env` arguments giving this stack's
# RabbitMQ/Erlang environment. RABBITMQ_* variables of the caller are dropped
# so they cannot point us at another node or config.
mq_env_init() {
    mq_resolve
    local v
    MQ_ENV=()
    for v in $(compgen -e RABBITMQ_ || true); do MQ_ENV+=(-u "$v"); done
    MQ_ENV+=(
        HOME="$MQ_DIR/home"
        ERL_EPMD_PORT="$EPMD_PORT"
        ERL_EPMD_ADDRESS=127.0.0.1
        RABBITMQ_NODENAME="$MQ_NODENAME"
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$AMQP_PORT"
        RABBITMQ_DIST_PORT="$MQ_DIST_PORT"
        # The CLI's own Erlang node listens too; its default range
        # (35672-35682) would be shared by every stack on the machine.
        RABBITMQ_CTL_DIST_PORT_MIN=$((MQ_DIST_PORT + 1))
        RABBITMQ_CTL_DIST_PORT_MAX=$((MQ_DIST_PORT + 9))
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
        RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
        RABBITMQ_MNESIA_BASE="$MQ_DIR/mnesia"
        RABBITMQ_LOG_BASE="$LOG_DIR/rabbitmq"
        RABBITMQ_CONFIG_FILE="$MQ_DIR/rabbitmq.conf"
        RABBITMQ_ADVANCED_CONFIG_FILE="$MQ_DIR/advanced.config"
        RABBITMQ_CONF_ENV_FILE="$MQ_DIR/rabbitmq-env.conf"
        RABBITMQ_ENABLED_PLUGINS_FILE="$MQ_DIR/enabled_plugins"
        RABBITMQ_PID_FILE="$MQ_PIDFILE"
    )
}

# mq_env CMD...: run CMD with this stack's RabbitMQ/Erlang environment. Every
# rabbitmqctl call goes through here (rabbitmq-server too, via MQ_ENV).
mq_env() {
    mq_env_init
    env "${MQ_ENV[@]}" "$@"
}

# mq_ctl ARGS...: rabbitmqctl against this stack's node.
mq_ctl() { mq_resolve; mq_env "$MQ_BIN/rabbitmqctl" -n "$MQ_NODENAME" "$@"; }

# mq_pid: the broker's beam pid if it is alive. The node name is not on the
# beam command line, so the process environment identifies our node.
mq_pid() {
    mq_resolve
    local pid
    pid=$(cat "$MQ_PIDFILE" 2>/dev/null || true)
    pid_alive "$pid" beam || return 0
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
        grep -qxF "RABBITMQ_NODENAME=$MQ_NODENAME"; then
        printf '%s\n' "$pid"
    fi
    return 0
}

mq_running() { [[ -n $(mq_pid) ]]; }

mq_prepare() {
    mq_resolve
    mkdir -p -- "$MQ_DIR/home" "$MQ_DIR/mnesia" "$LOG_DIR/rabbitmq"
    printf '%s\n' "$MQ_NODENAME" >"$MQ_DIR/nodename"
    # The stack's own Erlang cookie (server and CLI both read $HOME's).
    if [[ ! -s $MQ_DIR/home/.erlang.cookie ]]; then
        local cookie
        cookie=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F')
        (umask 077; printf '%s' "$cookie" >"$MQ_DIR/home/.erlang.cookie")
        chmod 400 -- "$MQ_DIR/home/.erlang.cookie"
    fi
    # The management API tells the queue's members (bulkreg-admin status, metrics).
    printf '[rabbitmq_management].\n' >"$MQ_DIR/enabled_plugins"
    printf '[].\n' >"$MQ_DIR/advanced.config"
    printf '# Intentionally empty: keeps /etc/rabbitmq/rabbitmq-env.conf out.\n' \
        >"$MQ_DIR/rabbitmq-env.conf"
    cat >"$MQ_DIR/rabbitmq.conf" <<'EOF'
# Written by scripts/lib.sh on every start of this stack; edits are lost.
# Listener address/port come from RABBITMQ_NODE_IP_ADDRESS/PORT.
loopback_users = none
log.console = false
log.file.level = info
EOF
    printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n%s\n' \
        "$MQ_MGMT_PORT" "${MQ_CONF_EXTRA:-}" >>"$MQ_DIR/rabbitmq.conf"
}

# mq_wait_ready LAUNCHER_PID: wait until the node has booted (0) or the
# launcher died (1); fail when START_TIMEOUT passes.
mq_wait_ready() {
    local launcher=$1 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        # The AMQP listener opens at the end of the boot; checking it is
        # cheap, while every rabbitmqctl call costs ~1 s of Erlang start-up.
        # await_startup then confirms the rabbit application is running.
        if [[ -n $(port_listeners "$AMQP_PORT") ]] &&
            mq_ctl -q await_startup --timeout 30 >/dev/null 2>&1; then
            return 0
        fi
        if [[ -n $launcher ]] && ! pid_alive "$launcher" rabbitmq-server; then
            return 1
        fi
        sleep 0.2
    done
    log_tail "$LOG_DIR/rabbitmq-server.out"
    log_tail "$LOG_DIR/rabbitmq/$MQ_NODENAME.log"
    die "RabbitMQ not ready after ${START_TIMEOUT}s; it may still be starting (logs: $LOG_DIR/rabbitmq*; scripts/down or scripts/ctl stop rabbitmq stops it)"
}

# mq_start: start this stack's broker in the background and wait until it
# accepts connections. A no-op when it already runs.
mq_start() {
    [[ -x $MQ_BIN/rabbitmq-server ]] || die "RabbitMQ not found in $MQ_BIN (run deps_install)"
    stack_dirs
    stack_reserve_ports
    mq_prepare

    if mq_running; then
        local rec
        rec=$(cat "$MQ_DIR/ports" 2>/dev/null || true)
        if [[ -n $rec && $rec != "$AMQP_PORT $MQ_DIST_PORT $EPMD_PORT" ]]; then
            warn "RabbitMQ of this stack already runs with ports $rec; keeping it"
            read -r AMQP_PORT MQ_DIST_PORT EPMD_PORT <<<"$rec"
            stack_urls
        fi
        mq_wait_ready ''
        log "RabbitMQ already running on 127.0.0.1:$AMQP_PORT"
        return 0
    fi

    local started=$SECONDS attempt out=$LOG_DIR/rabbitmq-server.out
    for attempt in 1 2 3; do
        mq_check_ports
        log "starting RabbitMQ $MQ_NODENAME on 127.0.0.1:$AMQP_PORT"
        printf '%s %s %s\n' "$AMQP_PORT" "$MQ_DIST_PORT" "$EPMD_PORT" >"$MQ_DIR/ports"
        printf '=== %s starting rabbitmq-server\n' "$(date -u +%FT%TZ)" >>"$out"
        local offset
        offset=$(stat -c %s -- "$out")
        mq_env_init
        # setsid: own session, so a Ctrl-C in the calling terminal does not
        # reach it. A simple command, so $! is the rabbitmq-server script
        # itself (setsid and env exec), the parent of beam.
        # 9>&-: keep scripts/test's lock out of the daemon.
        setsid env "${MQ_ENV[@]}" "$MQ_BIN/rabbitmq-server" \
            >>"$out" 2>&1 </dev/null 9>&- &
        local launcher=$!
        printf '%s\n' "$launcher" >"$MQ_LAUNCHER_PIDFILE"
        if mq_wait_ready "$launcher"; then
            log "RabbitMQ ready in $((SECONDS - started))s"
            return 0
        fi
        # Our ports lie in Linux's ephemeral range (32768-60999): an outgoing
        # connection of any process can hold one for a moment, and the
        # listener then fails with eaddrinuse. That is worth another try.
        if tail -c +"$((offset + 1))" -- "$out" | grep -q eaddrinuse && ((attempt < 3)); then
            warn "RabbitMQ could not bind a port (in use for a moment?); trying again"
            mq_epmd_stop
            sleep 1
            continue
        fi
        break
    done
    log_tail "$out"
    log_tail "$LOG_DIR/rabbitmq/$MQ_NODENAME.log"
    die "RabbitMQ exited during start-up (logs: $LOG_DIR/rabbitmq*)"
}

# mq_check_ports: fail clearly if another program listens on our ports. An
# epmd on our epmd port is fine (ours from an earlier run, or a shareable one).
mq_check_ports() {
    port_check_free "$AMQP_PORT" "RabbitMQ (AMQP)" BULKREG_AMQP_PORT
    port_check_free "$MQ_DIST_PORT" "RabbitMQ (Erlang distribution)" BULKREG_MQ_DIST_PORT
    local who
    who=$(port_listeners "$EPMD_PORT")
    if [[ -n $who && $who != *'"epmd"'* ]]; then
        port_check_free "$EPMD_PORT" "RabbitMQ (epmd)" BULKREG_EPMD_PORT
    fi
}

mq_stop() {
    mq_resolve
    local pid launcher
    pid=$(mq_pid || true)
    launcher=$(cat "$MQ_LAUNCHER_PIDFILE" 2>/dev/null || true)
    if [[ -n $pid ]]; then
        log "stopping RabbitMQ"
        # `stop PIDFILE` returns once the beam process has exited.
        if ! mq_env timeout "$STOP_TIMEOUT" "$MQ_BIN/rabbitmqctl" -n "$MQ_NODENAME" \
            stop "$MQ_PIDFILE" >/dev/null 2>&1; then
            warn "rabbitmqctl stop failed or timed out; sending SIGTERM to $pid"
            kill_wait "$pid" beam
        fi
        kill_wait "$pid" beam
    fi
    # The rabbitmq-server shell script exits after beam; reap it if needed.
    if [[ -n $launcher ]] && pid_alive "$launcher" rabbitmq-server; then
        [[ -n $pid ]] || log "stopping RabbitMQ (still starting)"
        kill_wait "$launcher" rabbitmq-server
    fi
    rm -f -- "$MQ_LAUNCHER_PIDFILE"
    mq_epmd_stop
}

# mq_epmd_stop: stop the epmd on this stack's epmd port once no node is
# registered with it any more (another node could share it).
mq_epmd_stop() {
    local who names
    who=$(port_listeners "$EPMD_PORT")
    [[ $who == *'"epmd"'* ]] || return 0
    names=$(ERL_EPMD_PORT=$EPMD_PORT epmd -port "$EPMD_PORT" -names 2>/dev/null | grep -c '^name ' || true)
    if [[ $names == 0 ]]; then
        epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------------------
# API and workers (background processes with pid and port files in RUN_DIR)

# kill_wait PID PATTERN: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
kill_wait() {
    local pid=$1 pattern=$2 deadline
    pid_alive "$pid" "$pattern" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while pid_alive "$pid" "$pattern" && ((SECONDS < deadline)); do sleep 0.1; done
    if pid_alive "$pid" "$pattern"; then
        warn "pid $pid ($pattern) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while pid_alive "$pid" "$pattern" && ((SECONDS < deadline)); do sleep 0.1; done
    fi
}

# daemon_pid NAME BINARY: the live pid of a daemon we started, or nothing.
daemon_pid() {
    local pid
    pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null || true)
    pid_alive "$pid" "$2" && printf '%s\n' "$pid"
    return 0
}

# daemon_port NAME DEFAULT: the port recorded for a daemon, else DEFAULT.
daemon_port() {
    local port
    port=$(cat "$RUN_DIR/$1.port" 2>/dev/null || true)
    printf '%s\n' "${port:-$2}"
}

# daemon_start NAME PORT CMD...: start CMD in its own session, output appended
# to LOG_DIR/NAME.log, pid to RUN_DIR/NAME.pid. Prints the pid.
daemon_start() {
    local name=$1 port=$2 logfile=$LOG_DIR/$1.log pidfile=$RUN_DIR/$1.pid
    shift 2
    rm -f -- "$pidfile"
    printf '=== %s starting %s\n' "$(date -u +%FT%TZ)" "$*" >>"$logfile"
    # The child writes its own pid then execs, so the pid is the program's.
    # shellcheck disable=SC2016 # $$ and $1 belong to the child shell
    # 9>&-: keep scripts/test's lock out of the daemon.
    setsid "$BASH" -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" "$@" \
        >>"$logfile" 2>&1 </dev/null 9>&- &
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $pidfile ]] && break
        sleep 0.1
    done
    [[ -s $pidfile ]] || die "$name did not start (log: $logfile)"
    printf '%s\n' "$port" >"$RUN_DIR/$name.port"
    cat -- "$pidfile"
}

# The environment every API/worker process gets: the caller's, the stack's
# URLs, and local-run defaults.
proc_env() {
    export DATABASE_URL AMQP_URL BULKREG_MQ_MANAGEMENT_URL
    export BULKREG_WEBHOOK_ALLOW_PRIVATE=${BULKREG_WEBHOOK_ALLOW_PRIVATE:-1}
}

api_start() {
    stack_dirs
    stack_reserve_ports
    local bin=$BIN_DIR/bulkreg-api pid
    pid=$(daemon_pid api bulkreg-api)
    if [[ -n $pid ]]; then
        API_PORT=$(daemon_port api "$API_PORT")
        stack_urls
        log "API already running (pid $pid) at $API_URL"
        return 0
    fi
    [[ -x $bin ]] || die "$bin not found: build first"
    port_check_free "$API_PORT" "API" BULKREG_API_PORT
    proc_env
    config_save
    log "starting API at $API_URL"
    pid=$(BULKREG_API_PORT=$API_PORT daemon_start api "$API_PORT" "$bin")
    stack_urls
    wait_http "$API_URL/healthz" "$pid" bulkreg-api "$LOG_DIR/api.log"
    log "API ready (pid $pid)"
}

api_stop() {
    local pid
    pid=$(daemon_pid api bulkreg-api)
    if [[ -n $pid ]]; then
        log "stopping API (pid $pid)"
        kill_wait "$pid" bulkreg-api
    fi
    rm -f -- "$RUN_DIR/api.pid"
}

# Metrics port of worker N: base + N - 1 (0 = off stays 0).
worker_metrics_port() {
    if [[ $WORKER_METRICS_BASE == 0 ]]; then echo 0; else echo $((WORKER_METRICS_BASE + $1 - 1)); fi
}

workers_start() {
    stack_dirs
    stack_reserve_ports
    local bin=$BIN_DIR/bulkreg-worker n pid port
    local -a started=()
    for ((n = 1; n <= WORKER_COUNT; n++)); do
        pid=$(daemon_pid "worker-$n" bulkreg-worker)
        if [[ -n $pid ]]; then
            log "worker $n already running (pid $pid)"
            continue
        fi
        [[ -x $bin ]] || die "$bin not found: build first"
        port=$(worker_metrics_port "$n")
        [[ $port == 0 ]] || port_check_free "$port" "worker $n metrics" BULKREG_WORKER_METRICS_PORT
        proc_env
        config_save
        log "starting worker $n (metrics port $port)"
        pid=$(BULKREG_WORKER_METRICS_PORT=$port daemon_start "worker-$n" "$port" "$bin")
        started+=("$n:$pid:$port")
    done
    local s
    for s in "${started[@]}"; do
        IFS=: read -r n pid port <<<"$s"
        if [[ $port != 0 ]]; then
            wait_http "http://127.0.0.1:$port/healthz" "$pid" bulkreg-worker "$LOG_DIR/worker-$n.log"
        elif ! pid_alive "$pid" bulkreg-worker; then
            log_tail "$LOG_DIR/worker-$n.log"
            die "worker $n exited at start-up"
        fi
        log "worker $n ready (pid $pid)"
    done
}

workers_stop() {
    local n pid
    local -a pids=()
    for ((n = 1; n <= WORKER_COUNT; n++)); do
        pid=$(daemon_pid "worker-$n" bulkreg-worker)
        [[ -n $pid ]] && pids+=("$pid")
    done
    if ((${#pids[@]})); then
        log "stopping workers (pids ${pids[*]})"
        # SIGTERM all first so they drain in parallel, then wait for each.
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for pid in "${pids[@]}"; do kill_wait "$pid" bulkreg-worker; done
    fi
    for ((n = 1; n <= WORKER_COUNT; n++)); do rm -f -- "$RUN_DIR/worker-$n.pid"; done
}

# ---------------------------------------------------------------------------
# The env file

# write_env: (re)write STACK_DIR/env from the live state (pid files, ports,
# token), atomically. Call it after anything that changes a pid.
write_env() {
    [[ -d $STACK_DIR ]] || return 0
    local api_pid worker_pids='' metrics_ports='' n pid port first_metrics=''
    api_pid=$(daemon_pid api bulkreg-api)
    [[ -n $api_pid ]] && API_PORT=$(daemon_port api "$API_PORT")
    stack_urls
    for ((n = 1; n <= WORKER_COUNT; n++)); do
        pid=$(daemon_pid "worker-$n" bulkreg-worker)
        [[ -n $pid ]] && worker_pids+="${worker_pids:+ }$pid"
        port=$(daemon_port "worker-$n" "$(worker_metrics_port "$n")")
        metrics_ports+="${metrics_ports:+ }$port"
        [[ -n $first_metrics ]] || first_metrics=$port
    done
    mq_resolve
    pg_resolve

    local token=''
    [[ -r $TOKEN_FILE ]] && token=$(cat -- "$TOKEN_FILE")

    local f=$STACK_DIR/env
    {
        printf '# bulkreg local stack (%s), written by scripts/%s at %s.\n' \
            "$STACK_PROFILE" "$SCRIPT_NAME" "$(date -u +%FT%TZ)"
        printf '# Kept true by scripts/up, scripts/ctl and scripts/down; do not edit.\n'
        local kv
        for kv in \
            "API_URL=$API_URL" \
            "DATABASE_URL=$DATABASE_URL" \
            "AMQP_URL=$AMQP_URL" \
            "BULKREG_MQ_MANAGEMENT_URL=$BULKREG_MQ_MANAGEMENT_URL" \
            "BULKREG_TOKEN=$token" \
            "API_PID=$api_pid" \
            "WORKER_PIDS=$worker_pids" \
            "BULKREG_WORKER_METRICS_PORT=$first_metrics" \
            "WORKER_METRICS_PORTS=$metrics_ports" \
            "API_PORT=$API_PORT" \
            "PG_PORT=$PG_PORT" \
            "AMQP_PORT=$AMQP_PORT" \
            "MQ_DIST_PORT=$MQ_DIST_PORT" \
            "EPMD_PORT=$EPMD_PORT" \
            "MQ_NODENAME=$MQ_NODENAME" \
            "PG_DATA_DIR=$PG_DATA" \
            "STACK_DIR=$STACK_DIR" \
            "STACK_PROFILE=$STACK_PROFILE"; do
            printf 'export %s=%s\n' "${kv%%=*}" "$(shquote "${kv#*=}")"
        done
    } >"$f.tmp"
    mv -f -- "$f.tmp" "$f"
}

# ---------------------------------------------------------------------------
# Whole stack

# stack_stop: stop everything of the stack that runs (data kept).
stack_stop() {
    [[ -d $STACK_DIR ]] || return 0
    workers_stop
    api_stop
    mqc_stop
    mq_stop
    pg_standby_drop
    pg_stop
}

# stack_purge: delete the stack's own files (call stack_stop first), then
# STACK_DIR if nothing else is left in it. Anything else there is kept, such
# as a stack nested in it (.local/test inside .local).
stack_purge() {
    [[ -d $STACK_DIR ]] || return 0
    local link=$STACK_DIR/pg target
    if [[ -L $link ]]; then
        target=$(readlink -- "$link")
        if [[ $target == "$PG_FALLBACK_BASE"/* ]]; then
            rm -rf -- "$target"
            rmdir --ignore-fail-on-non-empty -- "$PG_FALLBACK_BASE" 2>/dev/null || true
        fi
    fi
    log "deleting the stack in $(pretty_path "$STACK_DIR")"
    local entry
    for entry in env env.tmp config.env config.env.tmp demo-token logs run mq mq-cluster pg; do
        rm -rf -- "${STACK_DIR:?}/$entry"
    done
    if ! rmdir -- "$STACK_DIR" 2>/dev/null; then
        log "kept what else is in $(pretty_path "$STACK_DIR"):" \
            "$(find "$STACK_DIR" -mindepth 1 -maxdepth 1 -printf '%f ')"
    fi
}

# Human-readable path: relative to the repo root when inside it.
pretty_path() {
    case $1 in
        "$ROOT"/*) printf '%s\n' "${1#"$ROOT"/}" ;;
        *) printf '%s\n' "$1" ;;
    esac
}

# shellcheck source=scripts/lib_pg_standby.sh
source "$ROOT/scripts/lib_pg_standby.sh"

# The 3-node cluster of the fault tests (scripts/ctl cluster ...).
# shellcheck source=scripts/lib_mq_cluster.sh
source "$ROOT/scripts/lib_mq_cluster.sh"
