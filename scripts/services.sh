#!/usr/bin/env bash
# The servers the test suite needs besides the proxy itself: Redis (shared limits) and
# PostgreSQL (the usage ledger for several replicas). Each runs privately, on a free loopback
# port, with its data under one temporary directory; the machine's own services (if any) are
# never touched. Packages come from Debian and are installed only when missing.
#
#   scripts/services.sh run -- CMD...   install if needed, start both, run CMD with
#                                       LLM_PROXY_TEST_REDIS_URL and LLM_PROXY_TEST_POSTGRES_DSN
#                                       set, stop both whatever CMD did; CMD's status
#   scripts/services.sh start DIR       start both under DIR; prints the variables to export
#   scripts/services.sh stop DIR        stop what `start DIR` started
#   scripts/services.sh install         install the Debian packages if missing
set -euo pipefail

# Postgres refuses to run as root; the Debian package creates this user.
PG_USER=postgres
PG_ROLE=llm_proxy
PG_DATABASE=llm_proxy

log() { echo "services: $*" >&2; }

detached() {
    # The servers outlive this shell's children; they must not keep the caller's other open
    # files (a lock held by `flock` around `make check`, say) for as long as they run.
    python3 -c 'import os, sys; os.closerange(3, 4096); os.execvp(sys.argv[1], sys.argv[1:])' "$@"
}

pg_bindir() {
    # The newest installed major version; Debian puts each under its own directory.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n "$dir" && -x "$dir/initdb" ]] && echo "$dir"
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

install_missing() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    pg_bindir >/dev/null || missing+=(postgresql)
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    log "installing ${missing[*]} from Debian packages"
    local started=$SECONDS
    as_root apt-get update -qq
    # policy-rc.d in containers, and the explicit stop below elsewhere: the system-wide
    # services the packages may start are not ours to use.
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    log "installed in $((SECONDS - started))s"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
    # wait_for SECONDS CMD...: retry CMD until it succeeds or time runs out.
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

run_as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

start_redis() {
    local dir=$1 port
    port=$(free_port)
    mkdir -p "$dir/redis"
    detached redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/redis" --save '' --appendonly no \
        --daemonize yes --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log"
    if ! wait_for 20 redis-cli -p "$port" ping; then
        log "redis-server did not answer on port $port:"
        tail -n 20 "$dir/redis/redis.log" >&2 || true
        return 1
    fi
    echo "$port" >"$dir/redis/port"
    echo "export LLM_PROXY_TEST_REDIS_URL=redis://127.0.0.1:$port/0"
    echo "export LLM_PROXY_TEST_REDIS_SERVER=$(command -v redis-server)"
}

start_postgres() {
    local dir=$1 bindir port pgdir
    bindir=$(pg_bindir)
    port=$(free_port)
    if [[ $(id -u) -eq 0 ]]; then
        # The postgres user cannot reach into DIR when DIR's parents are private to root (as
        # pytest's are): its data goes to a directory of its own, remembered in DIR.
        pgdir=$(mktemp -d "${TMPDIR:-/tmp}/llm-proxy-postgres.XXXXXX")
        chown "$PG_USER" "$pgdir"
    else
        pgdir="$dir/postgres"
        mkdir -p "$pgdir"
    fi
    echo "$pgdir" >"$dir/postgres-dir"
    run_as_pg "$bindir/initdb" -D "$pgdir/data" -U "$PG_ROLE" --auth=trust \
        --encoding=UTF8 --no-sync >"$dir/postgres-initdb.log" 2>&1 || {
        log "initdb failed:"
        cat "$dir/postgres-initdb.log" >&2
        return 1
    }
    # Loopback TCP only, the socket in our own directory, no durability work: test data.
    run_as_pg python3 -c 'import os, sys; os.closerange(3, 4096); os.execvp(sys.argv[1], sys.argv[1:])' \
        "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$pgdir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || {
        log "postgres did not start:"
        tail -n 20 "$pgdir/server.log" >&2 || true
        return 1
    }
    run_as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$PG_ROLE" "$PG_DATABASE"
    echo "export LLM_PROXY_TEST_POSTGRES_DSN=postgresql://$PG_ROLE@127.0.0.1:$port/$PG_DATABASE"
}

stop_all() {
    local dir=$1
    if [[ -f "$dir/redis/port" ]]; then
        redis-cli -p "$(cat "$dir/redis/port")" shutdown nosave >/dev/null 2>&1 || true
    fi
    if [[ -f "$dir/redis/redis.pid" ]]; then
        kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
    fi
    if [[ -f "$dir/postgres-dir" ]]; then
        local pgdir
        pgdir=$(cat "$dir/postgres-dir")
        run_as_pg "$(pg_bindir)/pg_ctl" -D "$pgdir/data" -m immediate -w stop \
            >/dev/null 2>&1 || true
        # Only ever the directory `start` made: its path is ours, recorded a moment ago.
        [[ "$pgdir" == "$dir/postgres" ]] || rm -rf "$pgdir"
    fi
}

start_all() {
    local dir=$1
    install_missing
    mkdir -p "$dir"
    {
        start_redis "$dir"
        start_postgres "$dir"
    } >"$dir/env"
    cat "$dir/env"
}

case "${1:-}" in
install)
    install_missing
    ;;
start)
    start_all "${2:?usage: services.sh start DIR}"
    ;;
stop)
    stop_all "${2:?usage: services.sh stop DIR}"
    ;;
run)
    shift
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || { echo "usage: services.sh run -- CMD..." >&2; exit 2; }
    dir=$(mktemp -d "${TMPDIR:-/tmp}/llm-proxy-services.XXXXXX")
    cleanup() {
        stop_all "$dir"
        rm -rf "$dir"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    started=$SECONDS
    if ! start_all "$dir" >/dev/null; then
        log "could not start the test services"
        exit 1
    fi
    # shellcheck disable=SC1091
    source "$dir/env"
    log "redis on $LLM_PROXY_TEST_REDIS_URL, postgres on $LLM_PROXY_TEST_POSTGRES_DSN" \
        "(ready in $((SECONDS - started))s)"
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
