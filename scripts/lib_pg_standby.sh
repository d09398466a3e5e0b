# shellcheck shell=bash
# scripts/lib_pg_standby.sh: a streaming-replication standby of a stack's
# PostgreSQL on the same machine, for the failover test
# (tests/e2e/test_failover_database.c) and for trying a failover by hand
# (docs/operations.md, "Running with a PostgreSQL standby"). Sourced by
# scripts/lib.sh, never run; scripts/standby is its command line.
#
# The standby lives beside the primary's data, under PG_BASE/standby/
# (data/, log/postgresql.log), so stack_purge removes it with the primary.
# It listens on 127.0.0.1:PG_PORT+1 (reserved like the stack's own ports),
# TCP only (no unix socket: its path could exceed the socket limit), runs
# as the same user as the primary (pg_user: initdb and postgres refuse
# root) and is made with pg_basebackup -R, so it follows the primary with
# primary_conninfo and standby.signal.
#
# Replication is synchronous: the primary's bulkreg.conf gets
# synchronous_standby_names naming the standby (its cluster_name, which the
# WAL receiver uses as application_name), and synchronous_commit = on, so a
# commit is acknowledged only once the standby has flushed it: promoting
# the standby loses nothing a client was told is committed. The setting
# sits in bulkreg.conf, which pg_write_conf rewrites on every pg_start, so
# a primary restarted by scripts/ctl never waits for a standby that is gone.
# The standby's own configuration names no synchronous standby: once
# promoted, its commits wait for nobody.

STANDBY_APP_NAME=bulkreg_standby

# pg_standby_resolve: set STANDBY_PORT, STANDBY_BASE, STANDBY_DATA, STANDBY_LOG.
pg_standby_resolve() {
    pg_resolve
    STANDBY_PORT=$((PG_PORT + 1))
    STANDBY_BASE=$PG_BASE/standby
    STANDBY_DATA=$STANDBY_BASE/data
    STANDBY_LOG=$STANDBY_BASE/log/postgresql.log
}

pg_standby_running() {
    pg_standby_resolve
    [[ -f $STANDBY_DATA/PG_VERSION ]] && pg_run "$PG_BIN/pg_ctl" -D "$STANDBY_DATA" status >/dev/null 2>&1
}

# pg_admin_psql to the standby.
pg_standby_psql() {
    pg_standby_resolve
    PG_PORT=$STANDBY_PORT pg_admin_psql "$@"
}

# pg_standby_url: the multi-host DATABASE_URL that follows a promotion:
# libpq tries the primary, then the standby, and keeps the first that
# accepts writes.
pg_standby_url() {
    pg_standby_resolve
    printf 'postgresql://bulkreg@127.0.0.1:%s,127.0.0.1:%s/bulkreg?target_session_attrs=read-write\n' \
        "$PG_PORT" "$STANDBY_PORT"
}

# pg_standby_write_conf: the standby's bulkreg.conf is the primary's copy
# (pg_write_conf: durability, limits, logging) with its own port, no unix
# socket, its name, and no synchronous standby of its own.
pg_standby_write_conf() {
    local f=$STANDBY_DATA/bulkreg.conf
    sed -i -e '/^[[:space:]]*\(port\|unix_socket_directories\|synchronous_standby_names\)[[:space:]]*=/d' \
        -e '1s/.*/# The primary'"'"'s bulkreg.conf, adapted by scripts\/lib_pg_standby.sh./' "$f"
    cat >>"$f" <<EOF
port = $STANDBY_PORT
unix_socket_directories = ''
cluster_name = '$STANDBY_APP_NAME'
hot_standby = on
synchronous_standby_names = ''
EOF
    # ALTER SYSTEM settings of the primary came with the copy and would
    # override the line above.
    if [[ -f $STANDBY_DATA/postgresql.auto.conf ]]; then
        sed -i '/^[[:space:]]*synchronous_standby_names[[:space:]]*=/d' \
            "$STANDBY_DATA/postgresql.auto.conf"
    fi
}

# pg_standby_wait_sync: wait until the primary streams to the standby
# synchronously (pg_stat_replication says sync).
pg_standby_wait_sync() {
    local deadline=$((SECONDS + START_TIMEOUT)) state=''
    while ((SECONDS < deadline)); do
        state=$(pg_admin_psql -tAc "select sync_state from pg_stat_replication
                                    where application_name = '$STANDBY_APP_NAME'
                                      and state = 'streaming'" 2>/dev/null || true)
        [[ $state == sync ]] && return 0
        sleep 0.2
    done
    log_tail "$STANDBY_LOG"
    die "the standby did not become a synchronous standby within ${START_TIMEOUT}s (state '${state:-none}')"
}

# pg_standby_start: make (pg_basebackup) and start the standby of this
# stack's running primary, then make replication synchronous. A no-op when
# it already runs.
pg_standby_start() {
    pg_standby_resolve
    if pg_standby_running; then
        log "PostgreSQL standby already running on 127.0.0.1:$STANDBY_PORT"
        return 0
    fi
    pg_running || die "the primary PostgreSQL of this stack is not running (scripts/ctl start postgres)"
    ports_reserve "$STANDBY_PORT"
    port_check_free "$STANDBY_PORT" "PostgreSQL standby" "BULKREG_PG_PORT (the standby uses it + 1)"
    # A standby left from an earlier run has diverged or fallen behind: make it anew.
    rm -rf -- "$STANDBY_BASE"
    pg_run mkdir -p "$STANDBY_BASE" "$(dirname "$STANDBY_LOG")"
    log "copying the primary (127.0.0.1:$PG_PORT) into $STANDBY_DATA"
    pg_run "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$STANDBY_DATA" \
        -X stream -R -c fast >"$STANDBY_BASE/log/basebackup.log" 2>&1 ||
        { log_tail "$STANDBY_BASE/log/basebackup.log"; die "pg_basebackup failed"; }
    pg_standby_write_conf
    log "starting the PostgreSQL standby on 127.0.0.1:$STANDBY_PORT"
    # 9>&-: the postmaster must not inherit scripts/test's lock.
    pg_run "$PG_BIN/pg_ctl" -D "$STANDBY_DATA" -l "$STANDBY_LOG" -w -t "$START_TIMEOUT" \
        start >/dev/null 9>&- || { log_tail "$STANDBY_LOG"; die "the standby did not start (log: $STANDBY_LOG)"; }
    # Synchronous from now on: the primary's bulkreg.conf gains the setting
    # (and loses it on its next pg_start).
    printf "synchronous_standby_names = '%s'   # scripts/lib_pg_standby.sh\n" "$STANDBY_APP_NAME" \
        >>"$PG_DATA/bulkreg.conf"
    pg_admin_psql -tAc 'select pg_reload_conf()' >/dev/null
    pg_standby_wait_sync
    log "standby streaming synchronously; multi-host DATABASE_URL: $(pg_standby_url)"
}

# pg_standby_promote: promote the standby (after the primary died) and
# check it accepts writes and waits for no synchronous standby.
pg_standby_promote() {
    pg_standby_running || die "no PostgreSQL standby runs in this stack"
    log "promoting the PostgreSQL standby on 127.0.0.1:$STANDBY_PORT"
    pg_run "$PG_BIN/pg_ctl" -D "$STANDBY_DATA" -w -t "$START_TIMEOUT" promote >/dev/null ||
        { log_tail "$STANDBY_LOG"; die "pg_ctl promote failed"; }
    local recovery sync
    recovery=$(pg_standby_psql -tAc 'select pg_is_in_recovery()')
    sync=$(pg_standby_psql -tAc 'show synchronous_standby_names')
    [[ $recovery == f ]] || die "the promoted standby is still in recovery"
    [[ -z $sync ]] || die "the promoted standby waits for a synchronous standby ($sync): writes would hang"
}

# pg_standby_drop: stop the standby (immediately: it is thrown away) and
# delete it; the primary's bulkreg.conf loses the synchronous standby (and
# a running primary reloads it), so its commits stop waiting.
pg_standby_drop() {
    pg_standby_resolve
    if pg_standby_running; then
        log "stopping the PostgreSQL standby"
        pg_run "$PG_BIN/pg_ctl" -D "$STANDBY_DATA" -m immediate -w -t "$START_TIMEOUT" stop >/dev/null ||
            { log_tail "$STANDBY_LOG"; die "the PostgreSQL standby did not stop"; }
    fi
    rm -rf -- "$STANDBY_BASE"
    if [[ -f $PG_DATA/bulkreg.conf ]] && grep -q '^synchronous_standby_names' "$PG_DATA/bulkreg.conf"; then
        sed -i '/^synchronous_standby_names/d' "$PG_DATA/bulkreg.conf"
        if pg_running; then pg_admin_psql -tAc 'select pg_reload_conf()' >/dev/null; fi
    fi
}

# pg_standby_adopt: after a failover, the promoted standby becomes the
# stack's PostgreSQL (its data moved to PG_DATA, served on PG_PORT by
# pg_start) and the old primary's data, which may hold commits nobody was
# told about, is discarded: the stack goes on from what clients saw.
pg_standby_adopt() {
    pg_standby_running || die "no PostgreSQL standby runs in this stack"
    [[ $(pg_standby_psql -tAc 'select pg_is_in_recovery()') == f ]] ||
        die "the standby was not promoted: nothing to adopt (scripts/standby drop removes it)"
    pg_stop   # the old primary, if it was started again
    log "stopping the promoted standby to move it in place of the old primary"
    pg_run "$PG_BIN/pg_ctl" -D "$STANDBY_DATA" -m fast -w -t "$START_TIMEOUT" stop >/dev/null ||
        { log_tail "$STANDBY_LOG"; die "the promoted standby did not stop"; }
    rm -rf -- "$PG_DATA"
    mv -- "$STANDBY_DATA" "$PG_DATA"
    rm -rf -- "$STANDBY_BASE"
    # It follows nobody any more (standby.signal went with the promotion).
    sed -i '/^primary_conninfo/d' "$PG_DATA/postgresql.auto.conf"
    pg_start
}

# pg_primary_kill: SIGKILL the primary's postmaster and every process it
# started, as a lost host would end them: no shutdown, no last WAL flush.
# Its data stays; scripts/ctl start postgres recovers it.
pg_primary_kill() {
    pg_resolve
    local pm child
    pm=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
    pid_alive "$pm" postgres || die "the primary PostgreSQL of this stack is not running"
    local -a children=()
    # The children listed first, then the postmaster killed first: it
    # would otherwise notice a dead child and restart the others.
    while read -r child; do children+=("$child"); done < <(ps -o pid= --ppid "$pm" || true)
    log "killing the primary PostgreSQL (postmaster $pm and ${#children[@]} children) with SIGKILL"
    kill -KILL "$pm"
    ((${#children[@]} == 0)) || kill -KILL "${children[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while pid_alive "$pm" postgres && ((SECONDS < deadline)); do sleep 0.05; done
    ! pid_alive "$pm" postgres || die "the postmaster $pm survived SIGKILL"
    # pg_ctl status takes an unreaped (zombie) postmaster for a running
    # one, and pg_start would then not start the primary again: wait until
    # its parent (init, or a subreaper) has reaped it.
    while [[ -e /proc/$pm ]] && ((SECONDS < deadline)); do sleep 0.05; done
    [[ ! -e /proc/$pm ]] || warn "the killed postmaster $pm is not reaped yet"
}
