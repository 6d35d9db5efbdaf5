#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, on loopback only:
#   scripts/postgres.sh start DIR   create and start a cluster in DIR (installs Debian's postgresql when missing;
#                                   POSTGRES_DURABLE=1 keeps PostgreSQL's fsync and commit defaults)
#   scripts/postgres.sh url DIR     print its URL (postgres://exai:PASSWORD@127.0.0.1:PORT/postgres; a secret)
#   scripts/postgres.sh stop DIR    stop it and remove DIR
#   scripts/postgres.sh pause DIR   stop the server, keeping the cluster (a database outage, for tests)
#   scripts/postgres.sh resume DIR  start it again on the same port
#   scripts/postgres.sh freeze DIR  stop the server's processes (SIGSTOP): it accepts connections and
#                                   never answers, as a hung server or a lost route does (for tests)
#   scripts/postgres.sh thaw DIR    let them go on (SIGCONT)
# `start` prints nothing secret: the URL, password included, is only in DIR/url (mode 0600).
set -euo pipefail

usage() {
    echo "usage: scripts/postgres.sh start|stop|pause|resume|freeze|thaw|url DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$2

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command with root's rights (apt-get).
as_root() {
    if is_root; then "$@"; else sudo "$@"; fi
}

# Runs a server binary as the cluster's owner: initdb and postgres refuse to run as root.
as_owner() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# The bin directory of the newest PostgreSQL server installed, or nothing.
server_bin() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        if [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ]; then
            echo "$bin"
        fi
    done | sort -V | tail -n 1
}

install_server() {
    echo "scripts/postgres.sh: no PostgreSQL server found; installing Debian's postgresql package" >&2
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql)
    if ! as_root "${install[@]}"; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update
        as_root "${install[@]}"
    fi
}

# A loopback port nothing answers on now (the start retries if it is taken meanwhile).
unused_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

start() {
    local bin
    bin=$(server_bin)
    if [ -z "$bin" ]; then
        install_server
        bin=$(server_bin)
        [ -n "$bin" ] || { echo "scripts/postgres.sh: no initdb/pg_ctl after installing postgresql" >&2; exit 1; }
    fi
    if [ -e "$dir/data" ]; then
        echo "scripts/postgres.sh: $dir already holds a cluster" >&2
        exit 1
    fi
    mkdir -p "$dir"
    chmod 700 "$dir"
    if is_root; then
        chown postgres: "$dir"
    fi

    local password
    password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" >"$dir/pwfile")
    if is_root; then
        chown postgres: "$dir/pwfile"
    fi
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=exai --pwfile="$dir/pwfile" \
        --auth=scram-sha-256 --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    rm -f "$dir/pwfile"
    # Password logins only: over TCP on 127.0.0.1, and on the socket in DIR (which pg_ctl itself never needs).
    as_owner tee "$dir/data/pg_hba.conf" >/dev/null <<'EOF'
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
EOF
    as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<'EOF'
listen_addresses = '127.0.0.1'
max_connections = 300
EOF
    # A test cluster: losing it in a crash costs nothing, so skip the durability work — unless
    # POSTGRES_DURABLE=1 (benchmarks measure PostgreSQL as a team would run it).
    if [ "${POSTGRES_DURABLE:-0}" != 1 ]; then
        as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<'EOF'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi

    local port attempt
    for attempt in 1 2 3 4 5; do
        port=$(unused_port)
        if as_owner "$bin/pg_ctl" start --pgdata="$dir/data" --wait --timeout=60 \
            --log="$dir/server.log" --options="-p $port -k $dir" >/dev/null; then
            (umask 077 && printf 'postgres://exai:%s@127.0.0.1:%s/postgres\n' "$password" "$port" >"$dir/url")
            "$bin/pg_isready" --quiet --host=127.0.0.1 --port="$port" --timeout=30
            echo "scripts/postgres.sh: PostgreSQL on 127.0.0.1:$port, its URL in $dir/url"
            return
        fi
        # Someone took the port between the probe and the start: try another.
        if ! grep -q "could not bind" "$dir/server.log" 2>/dev/null || [ "$attempt" -eq 5 ]; then
            cat "$dir/server.log" >&2 || true
            exit 1
        fi
    done
}

stop() {
    [ -d "$dir" ] || return 0
    if [ -f "$dir/data/postmaster.pid" ]; then
        local bin
        bin=$(server_bin)
        # A server that already died leaves its pid file: say so, and remove the cluster anyway.
        as_owner "$bin/pg_ctl" stop --pgdata="$dir/data" --mode=fast --wait >/dev/null ||
            echo "scripts/postgres.sh: pg_ctl stop failed for $dir" >&2
    fi
    rm -rf "$dir"
}

# The server's processes: the postmaster and its children (it forks none while stopped).
server_pids() {
    local postmaster
    postmaster=$(head -1 "$dir/data/postmaster.pid" 2>/dev/null) || return 0
    echo "$postmaster" $(ps -o pid= --ppid "$postmaster")
}

signal_server() {
    local pids
    pids=$(server_pids)
    [ -z "$pids" ] || kill "-$1" $pids
}

pause() {
    as_owner "$(server_bin)/pg_ctl" stop --pgdata="$dir/data" --mode=fast --wait >/dev/null
}

resume() {
    local bin port
    bin=$(server_bin)
    port=$(sed -E 's#.*:([0-9]+)/[^/]*$#\1#' "$dir/url")
    as_owner "$bin/pg_ctl" start --pgdata="$dir/data" --wait --timeout=60 \
        --log="$dir/server.log" --options="-p $port -k $dir" >/dev/null
    "$bin/pg_isready" --quiet --host=127.0.0.1 --port="$port" --timeout=30
}

case "$action" in
start) start ;;
stop)
    # A frozen server would never stop.
    signal_server CONT 2>/dev/null || true
    stop
    ;;
freeze) signal_server STOP ;;
thaw) signal_server CONT ;;
pause) pause ;;
resume) resume ;;
url) cat "$dir/url" ;;
*) usage ;;
esac
