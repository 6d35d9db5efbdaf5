#!/usr/bin/env bash
# nginx in front of exai replicas, for the tests and as the recipe's reference, on loopback only:
#   scripts/nginx.sh start DIR LISTEN_PORT UPSTREAM_PORT...   write DIR/nginx.conf and start nginx (installs
#                                                             Debian's nginx when missing)
#   scripts/nginx.sh stop DIR                                 stop it and remove DIR
#   scripts/nginx.sh install                                  only make sure nginx is installed
# Nothing under /etc/nginx is used: config, pid, logs and temporary files all live in DIR.
#
# Routing. `/mcp` (Streamable HTTP) keeps each MCP session on the replica that made it, since rmcp
# keeps sessions in that replica's memory: nginx prefixes the session id the replica hands out with
# the replica's tag (`r1.`, `r2.`, …), routes a request carrying such an id to that replica alone
# and strips the tag on the way in. A request without a session id (initialize) goes round-robin.
# A session whose replica is gone gets 404 (the protocol's "start a new session"), not a hang.
# `/ws` is one connection per session; the two requests of the shim's Exai-Proof handshake are kept
# on one replica by hashing the shim's nonce. `/healthz` goes to any replica.
set -euo pipefail

usage() {
    echo "usage: scripts/nginx.sh start DIR LISTEN_PORT UPSTREAM_PORT... | stop DIR | install" >&2
    exit 2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command with root's rights (apt-get).
as_root() {
    if is_root; then "$@"; else sudo "$@"; fi
}

nginx_bin() {
    local bin
    for bin in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx; do
        if [ -n "$bin" ] && [ -x "$bin" ]; then
            echo "$bin"
            return
        fi
    done
}

install_nginx() {
    [ -n "$(nginx_bin)" ] && return
    echo "scripts/nginx.sh: no nginx found; installing Debian's nginx package" >&2
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx)
    if ! as_root "${install[@]}"; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update
        as_root "${install[@]}"
    fi
    [ -n "$(nginx_bin)" ] || { echo "scripts/nginx.sh: no nginx binary after installing nginx" >&2; exit 1; }
    # Under systemd the package starts its default site on port 80 of every interface: the tests
    # want none of that, only the loopback nginx they start themselves.
    if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
        echo "scripts/nginx.sh: stopping and disabling the nginx service the package started" >&2
        as_root systemctl disable --now nginx
    fi
}

is_port() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

# Whether something accepts connections on 127.0.0.1:$1.
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The headers every location sets (nginx drops the server's proxy_set_header in a location that
# sets any): exai's Host/Origin guard judges the name the client used ($host: without the port).
forwarded_headers() {
    cat <<'EOF'
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
EOF
}

# The configuration: one `upstream` per replica (a session's home) and two groups of all of them.
write_config() {
    local dir=$1 listen=$2
    shift 2
    local replicas=("$@") i port
    {
        echo "# Written by scripts/nginx.sh: nginx in front of ${#replicas[@]} exai replicas."
        echo "worker_processes 1;"
        echo "pid $dir/nginx.pid;"
        echo "lock_file $dir/nginx.lock;"
        echo "error_log $dir/error.log warn;"
        # Run as root, nginx hands requests to workers of an unprivileged user: they get the temp dir.
        if is_root; then echo "user $worker_user;"; fi
        cat <<EOF
events { worker_connections 1024; }

http {
    log_format exai '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent upstream=\$upstream_addr \$request_time s';
    access_log $dir/access.log exai;
    client_body_temp_path $dir/temp/body;
    proxy_temp_path $dir/temp/proxy;
    fastcgi_temp_path $dir/temp/fastcgi;
    uwsgi_temp_path $dir/temp/uwsgi;
    scgi_temp_path $dir/temp/scgi;
    default_type text/plain;
    server_tokens off;
    # exai refuses messages over EXAI_MAX_MESSAGE_BYTES (16 MiB by default) itself.
    client_max_body_size 17m;

    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      close;
    }

    # /mcp: the replica a request's session lives on (tag "rN." in front of rmcp's session id) ...
    map \$http_mcp_session_id \$exai_session_replica {
        default exai_any;
EOF
        for i in "${!replicas[@]}"; do
            echo "        \"~^r$((i + 1))\\.\" exai_r$((i + 1));"
        done
        cat <<'EOF'
    }
    # ... the session id the replica gave out, without the tag ...
    map $http_mcp_session_id $exai_session_inner {
        default                      $http_mcp_session_id;
        "~^r[0-9]+\.(?<inner>.+)$"   $inner;
    }
    # ... and the tag of the replica that answered ($upstream_addr lists every one tried: the last).
    map $upstream_addr $exai_answered_by {
        default "";
EOF
        for i in "${!replicas[@]}"; do
            echo "        \"~(^|, )127\\.0\\.0\\.1:${replicas[$i]}\$\" r$((i + 1));"
        done
        cat <<EOF
    }
    map \$upstream_http_mcp_session_id \$exai_session_out {
        ""      "";
        default "\$exai_answered_by.\$upstream_http_mcp_session_id";
    }
    # /ws: the shim's Exai-Proof handshake is two requests with one client nonce (cn): one replica.
    map \$http_authorization \$exai_ws_affinity {
        default                        \$request_id;
        "~cn=(?<nonce>[0-9a-fA-F]+)"   \$nonce;
    }

EOF
        for i in "${!replicas[@]}"; do
            echo "    upstream exai_r$((i + 1)) { server 127.0.0.1:${replicas[$i]}; keepalive 8; }"
        done
        echo "    upstream exai_any {"
        for port in "${replicas[@]}"; do echo "        server 127.0.0.1:$port;"; done
        echo "        keepalive 16;"
        echo "    }"
        echo "    upstream exai_ws {"
        echo "        hash \$exai_ws_affinity;"
        for port in "${replicas[@]}"; do echo "        server 127.0.0.1:$port;"; done
        echo "    }"
        cat <<EOF

    server {
        listen 127.0.0.1:$listen;
        server_name _;

        proxy_http_version 1.1;

        location = /mcp {
$(forwarded_headers)
            # Authorization, Mcp-Protocol-Version and Last-Event-ID pass as sent; the session id
            # loses its replica tag on the way in and gains it on the way out.
            proxy_set_header Mcp-Session-Id \$exai_session_inner;
            proxy_set_header Connection "";
            proxy_hide_header Mcp-Session-Id;
            add_header Mcp-Session-Id \$exai_session_out always;
            # Answers and notifications stream as server-sent events: pass each event at once,
            # and let a quiet stream (a long call; rmcp pings every 15 s) stay open.
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_pass http://\$exai_session_replica;
            error_page 502 504 = @exai_unreachable;
        }

        location = /ws {
$(forwarded_headers)
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_pass http://exai_ws;
        }

        location = /healthz {
$(forwarded_headers)
            proxy_set_header Connection "";
            proxy_pass http://exai_any;
        }

        location @exai_unreachable {
            if (\$http_mcp_session_id) {
                return 404 "Not Found: this MCP session ended (the exai replica that held it is gone); start a new session\n";
            }
            return 502 "Bad Gateway: no exai replica answered\n";
        }

        location / {
            return 404 "Not Found: exai serves /mcp, /ws and /healthz\n";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
}

start() {
    [ $# -ge 3 ] || usage
    local dir=$1 listen=$2
    shift 2
    local port
    for port in "$listen" "$@"; do
        is_port "$port" || { echo "scripts/nginx.sh: not a port: $port" >&2; exit 2; }
    done
    install_nginx
    local bin
    bin=$(nginx_bin)
    if [ -e "$dir/nginx.conf" ]; then
        echo "scripts/nginx.sh: $dir already holds an nginx" >&2
        exit 1
    fi
    worker_user=nobody
    if is_root && id www-data >/dev/null 2>&1; then worker_user=www-data; fi
    mkdir -p "$dir/temp"
    # The workers (another user when run as root) only pass through DIR and write in DIR/temp.
    chmod 711 "$dir"
    if is_root; then chown "$worker_user" "$dir/temp"; fi
    write_config "$dir" "$listen" "$@"
    "$bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -t -q || {
        cat "$dir/error.log" >&2 || true
        exit 1
    }
    "$bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" || {
        cat "$dir/error.log" >&2 || true
        exit 1
    }
    local waited
    for waited in $(seq 1 100); do
        if answers "$listen"; then
            echo "scripts/nginx.sh: nginx on 127.0.0.1:$listen in front of 127.0.0.1:{$(
                IFS=,
                echo "$*"
            )}"
            return
        fi
        sleep 0.1
    done
    echo "scripts/nginx.sh: nginx did not answer on 127.0.0.1:$listen after ${waited}00 ms" >&2
    cat "$dir/error.log" >&2 || true
    exit 1
}

stop() {
    [ $# -eq 1 ] || usage
    local dir=$1
    [ -d "$dir" ] || return 0
    if [ -s "$dir/nginx.pid" ]; then
        local pid
        pid=$(cat "$dir/nginx.pid")
        # Fast shutdown: a graceful one would wait for open event streams.
        kill -TERM "$pid" 2>/dev/null || true
        local waited
        for waited in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "scripts/nginx.sh: nginx (pid $pid) still running after ${waited}00 ms; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$dir"
}

[ $# -ge 1 ] || usage
action=$1
shift
case "$action" in
start) start "$@" ;;
stop) stop "$@" ;;
install) [ $# -eq 0 ] || usage; install_nginx ;;
*) usage ;;
esac
