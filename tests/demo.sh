#!/usr/bin/env bash
# Installs the dependencies, builds aigw, and starts a working gateway on
# http://127.0.0.1:8080: lighttpd spawning aigw workers, in front of a local
# mock Azure OpenAI region (no real Azure endpoint is reachable from a fresh
# machine). Prints an API key and a curl command that works. Ctrl-C stops it.
#   sudo tests/demo.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
port=${1:-8080}
if [ "$(id -u)" = 0 ] && [ "${SKIP_SETUP:-0}" != 1 ]; then
    tests/setup-debian.sh
fi
[ -x configure ] || ./autogen.sh
[ -f Makefile ] || ./configure -q
make -j"$(nproc)" -s aigw

demo=$(mktemp -d /tmp/aigw-demo.XXXXXX)
chmod 755 "$demo"
python3 tests/mock_region.py --port 0 --name eastus > "$demo/mock.out" &
mock_pid=$!
trap 'kill $mock_pid 2>/dev/null; [ -n "${lighttpd_pid:-}" ] && kill $lighttpd_pid 2>/dev/null; echo; echo "stopped; files left in $demo"' EXIT
for _ in $(seq 50); do grep -q READY "$demo/mock.out" && break; sleep 0.1; done
mock_port=$(awk '/READY/ {print $2}' "$demo/mock.out")
printf 'mock-region-key\n' > "$demo/eastus.key"
chmod 600 "$demo/eastus.key"

cat > "$demo/aigw.json" <<JSON
{
  "environment": "demo",
  "database": { "path": "$demo/aigw.db" },
  "auth": { "enabled": true },
  "limits": { "requests_per_window": 100, "window_s": 60, "default_token_budget": 10000 },
  "backends": [
    { "name": "eastus", "type": "azure", "url": "http://127.0.0.1:$mock_port",
      "api_key": "file:$demo/eastus.key", "priority": 1,
      "deployments": { "gpt-4o": "gpt-4o-eastus" } }
  ]
}
JSON
aigw="$top/aigw --config $demo/aigw.json"
$aigw check-config
$aigw db migrate >/dev/null
$aigw user add demo-user --roles AI.User >/dev/null
key=$($aigw key create demo-user 2>/dev/null)

sed -e "s|^var.aigw_bin .*|var.aigw_bin = \"$top/aigw\"|" \
    -e "s|^var.aigw_config .*|var.aigw_config = \"$demo/aigw.json\"|" \
    -e "s|^var.aigw_socket .*|var.aigw_socket = \"$demo/fastcgi.sock\"|" \
    -e "s|^var.aigw_state_dir .*|var.aigw_state_dir = \"$demo\"|" \
    -e "s|^var.aigw_log .*|var.aigw_log = \"$demo/error.log\"|" \
    -e "s|^var.aigw_port .*|var.aigw_port = $port|" \
    webserver-configs/lighttpd/aigw.conf > "$demo/lighttpd.conf"
/usr/sbin/lighttpd -D -f "$demo/lighttpd.conf" &
lighttpd_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

cat <<TXT

aigw is running on http://127.0.0.1:$port (lighttpd + aigw workers + a mock region).
Files: $demo (config, database, logs). Try:

  curl -s http://127.0.0.1:$port/api/chat \\
    -H 'Authorization: Bearer $key' -H 'Content-Type: application/json' \\
    -d '{"messages":[{"role":"user","content":"Hello"}],"user_id":"demo-user"}'

  sqlite3 $demo/aigw.db 'SELECT request_id, user_id, status, total_tokens, latency_ms FROM audit_log'

Press Ctrl-C to stop.
TXT
wait $lighttpd_pid
