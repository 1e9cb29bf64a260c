#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for tests, run by an unprivileged user
# (the "postgres" OS user when invoked as root, since initdb refuses root).
#
#   source tests/scripts/cluster.sh; cluster_start DIR [extra postgres -c options...]
#   ... PGHOST/PGPORT/PGUSER are exported ...
#   cluster_stop DIR
# (a library: sourced by scripts that choose their own shell options)

PG_BINDIR="$(pg_config --bindir)"

cluster_user() {
    if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi
}

# as_cluster_user CMD...: run a command as the cluster's OS user.
as_cluster_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# cluster_start DIR PORT [postgres options...]
cluster_start() {
    local dir="$1" port="$2"; shift 2
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    as_cluster_user "$PG_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
fsync = off
max_worker_processes = 16
max_parallel_workers = 8
max_parallel_workers_per_gather = 2
CONF
    local opt
    for opt in "$@"; do echo "$opt" >>"$dir/data/postgresql.conf"; done
    as_cluster_user "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/server.log"; return 1; }
    export PGHOST="$dir" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
}

# poll TRIES SQL: the first non-empty output of the caller's q SQL, tried every
# 0.1 s at most TRIES times (empty when it never answered).
poll() {
    local n="$1" sql="$2" out=""
    for _ in $(seq 1 "$n"); do
        out=$(q "$sql")
        [ -n "$out" ] && break
        sleep 0.1
    done
    printf '%s\n' "$out"
}

# cluster_stop DIR
cluster_stop() {
    local dir="$1"
    as_cluster_user "$PG_BINDIR/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
}
