#!/usr/bin/env bash
# tests/bench/run.sh -- `make bench`: aigw's throughput, latency and memory
# against a direct call to a mock region, plain nginx proxy_pass and Portkey,
# and the admin API's response times on a 1,000,000-row database.
#
# Installs what it needs only if it is missing (Debian packages with apt-get,
# Portkey with npm into tests/bench/.portkey/), then runs bench.py, which
# starts every server on 127.0.0.1 (free ports), measures, prints a table and
# writes tests/bench/results/latest.json, and after it admin_api.py (section
# admin: results/latest-admin.json). Everything they started is stopped on
# exit. See tests/bench/README.md for what is measured and the knobs.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export AIGW_SRCDIR="${AIGW_SRCDIR:-$(cd "$BENCH_DIR/../.." && pwd)}"
export AIGW_BIN="${AIGW_BIN:-$AIGW_SRCDIR/aigw}"
export BENCH_SECTIONS="${BENCH_SECTIONS:-matrix,memory,syscalls,stream,audit,callgrind,slow,admin}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
T_START=$(date +%s)

if [ ! -x "$AIGW_BIN" ]; then
    echo "bench: $AIGW_BIN is not built (run 'make bench' or 'make aigw')" >&2
    exit 1
fi

has_section() { case ",$BENCH_SECTIONS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# bench.py's sections: all but admin, which admin_api.py runs after it.
PY_SECTIONS=$(printf '%s' "$BENCH_SECTIONS" | tr ',' '\n' | { grep -vx 'admin' || true; } | paste -sd, -)

# --- Debian packages, only those missing ------------------------------------
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need wrk wrk
need nginx nginx-light
need lighttpd lighttpd
need sqlite3 sqlite3
need python3 python3
need strace strace
if has_section callgrind; then need valgrind valgrind; need callgrind_annotate valgrind; fi
if [ "${BENCH_PORTKEY:-1}" = 1 ]; then need node nodejs; need npm npm; fi
# bench.py compiles fcgi_floor.c (matrix: libfcgi, libcurl) and slow_mock.c
# (slow: libc only) at run time.
need_header() {   # need_header HEADER PACKAGE: missing unless cc finds HEADER
    if ! command -v cc >/dev/null 2>&1 ||
       ! printf '#include <%s>\n' "$1" | cc -E -x c - >/dev/null 2>&1; then
        missing+=("$2")
    fi
}
if has_section matrix || has_section slow; then need cc gcc; need_header stdio.h libc6-dev; fi
if has_section matrix; then need_header fcgiapp.h libfcgi-dev; need_header curl/curl.h libcurl4-openssl-dev; fi
if [ "${#missing[@]}" -gt 0 ]; then
    pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    echo "bench: installing missing Debian packages: $pkgs"
    if [ "$(id -u)" != 0 ]; then
        echo "bench: not root; install them yourself: apt-get install -y $pkgs" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    # shellcheck disable=SC2086
    timeout 300 apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    # Debian starts the servers it installs; the benchmark uses its own instances.
    for svc in nginx lighttpd; do
        if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
    done
fi

# --- Portkey (the peer gateway), from npm, only if missing ------------------
# @hono/node-server is pinned below 1.14: with 1.14 and later (what npm picks
# for Portkey's "^1.3.3"), every streamed answer through Portkey on Node fails
# with "TypeError: immutable" in updateHeaders (Portkey issues #1389, #1550).
HONO_NODE_SERVER_VERSION="${HONO_NODE_SERVER_VERSION:-1.13.8}"
PK_DIR="$BENCH_DIR/.portkey"
export PORTKEY_JS="$PK_DIR/node_modules/@portkey-ai/gateway/build/start-server.js"
export PORTKEY_UNAVAILABLE=""
pk_installed() {
    [ -f "$PORTKEY_JS" ] &&
    grep -q "\"version\": \"$PORTKEY_VERSION\"" "$PK_DIR/node_modules/@portkey-ai/gateway/package.json" 2>/dev/null &&
    grep -q "\"version\": \"$HONO_NODE_SERVER_VERSION\"" "$PK_DIR/node_modules/@hono/node-server/package.json" 2>/dev/null
}
if [ "${BENCH_PORTKEY:-1}" != 1 ]; then
    PORTKEY_UNAVAILABLE="skipped (BENCH_PORTKEY=0)"
elif ! has_section matrix && ! has_section stream && ! has_section slow; then
    PORTKEY_UNAVAILABLE="not needed by BENCH_SECTIONS"
elif ! pk_installed; then
    echo "bench: installing @portkey-ai/gateway@$PORTKEY_VERSION (with @hono/node-server@$HONO_NODE_SERVER_VERSION) from npm into tests/bench/.portkey (missing)"
    mkdir -p "$PK_DIR"
    printf '{"private": true,\n "dependencies": {"@portkey-ai/gateway": "%s"},\n "overrides": {"@hono/node-server": "%s"}}\n' \
        "$PORTKEY_VERSION" "$HONO_NODE_SERVER_VERSION" >"$PK_DIR/package.json"
    if ! (cd "$PK_DIR" && timeout 240 npm install --no-audit --no-fund --loglevel=error >npm-install.log 2>&1) ||
       ! pk_installed; then
        PORTKEY_UNAVAILABLE="npm install @portkey-ai/gateway@$PORTKEY_VERSION failed: $(grep -m1 -i 'err' "$PK_DIR/npm-install.log" || tail -n1 "$PK_DIR/npm-install.log")"
        echo "bench: $PORTKEY_UNAVAILABLE" >&2
    fi
fi

# --- run, and stop everything on the way out --------------------------------
export BENCH_WORK
BENCH_WORK="$(mktemp -d /tmp/aigw-bench.XXXXXX)"
BENCH_PID=""
cleanup() {
    # Stop bench.py (it stops what it started, within seconds), then whatever
    # survived it: the process groups it recorded (one per server it started).
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$BENCH_PID" 2>/dev/null || true
    fi
    if [ -f "$BENCH_WORK/pgids" ]; then
        while read -r pgid; do
            [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null || true
        done <"$BENCH_WORK/pgids"
        sleep 0.5
        while read -r pgid; do
            [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
        done <"$BENCH_WORK/pgids"
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: kept $BENCH_WORK"
    else
        rm -rf "$BENCH_WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bench.py keeps to BENCH_BUDGET seconds (skipping what no longer fits);
# the hard stop is a minute later.
SPENT=$(( $(date +%s) - T_START ))
export BENCH_BUDGET="${BENCH_BUDGET:-$(( 540 - SPENT ))}"
# The python3 that configure picks for the integration tests (/usr/bin first):
# Debian's has python3-psycopg2, through which pgserver.py sets up the
# PostgreSQL of the aigw-pg-nginx rows (another python3 earlier in PATH may not).
PYTHON3="${PYTHON3:-$(PATH="/usr/bin:$PATH" command -v python3)}"
status=0
if [ -n "$PY_SECTIONS" ]; then
    BENCH_SECTIONS="$PY_SECTIONS" timeout -s TERM -k 15 $(( BENCH_BUDGET + 60 )) "$PYTHON3" "$BENCH_DIR/bench.py" &
    BENCH_PID=$!
    wait "$BENCH_PID" || status=$?
    BENCH_PID=""
fi
# The admin API on a seeded 1,000,000-row database (admin_api.py): about two
# minutes of its own (BENCH_ADMIN_BUDGET), after bench.py's budget.
if has_section admin; then
    admin_status=0
    timeout -s TERM -k 15 $(( ${BENCH_ADMIN_BUDGET:-150} + 90 )) "$PYTHON3" "$BENCH_DIR/admin_api.py" &
    BENCH_PID=$!
    wait "$BENCH_PID" || admin_status=$?
    BENCH_PID=""
    [ "$status" -ne 0 ] || status=$admin_status
fi
echo "bench: wall time $(( $(date +%s) - T_START )) s"
exit $status
