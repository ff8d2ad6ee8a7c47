#!/usr/bin/env bash
# Memory benchmark: tokex's resident set idle, per cached narrowed token and per idle app
# connection.
#
#   scripts/memory.sh                       # needs target/release/tokex (cargo build --release)
#   MEMORY_TOKENS=100000 MEMORY_CONNECTIONS=1000 MEMORY_TOKEN_BYTES=1024 scripts/memory.sh
#
# What it does, on 127.0.0.1 only (ports picked free at run time):
#   1. starts an upstream nginx (`return 200`), the mock AS of scripts/bench_as.py issuing
#      tokens of MEMORY_TOKEN_BYTES bytes, and tokex on one route (TOKIO_WORKER_THREADS=1,
#      as in scripts/bench.sh);
#   2. idle RSS: VmRSS after one request through the route;
#   3. per token: MEMORY_TOKENS requests with distinct subject tokens (each an exchange and
#      a cache entry of a MEMORY_TOKEN_BYTES token), then (VmRSS - idle) / tokens;
#   4. per connection: MEMORY_CONNECTIONS app connections, each after one request, held
#      open idle; (VmRSS - before) / connections.
# Tools: nginx and curl (installed with apt-get as scripts/bench.sh does), python3 stdlib.
# Every process started here is stopped on exit. Output: a markdown table on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/target/memory"
TOKEX_BIN=${MEMORY_TOKEX_BIN:-$ROOT/target/release/tokex}
TOKENS=${MEMORY_TOKENS:-100000}
CONNECTIONS=${MEMORY_CONNECTIONS:-1000}
TOKEN_BYTES=${MEMORY_TOKEN_BYTES:-1024}

log() { printf '[memory] %s\n' "$*" >&2; }
die() { printf '[memory] error: %s\n' "$*" >&2; exit 1; }
[[ -x $TOKEX_BIN ]] || die "$TOKEX_BIN does not exist (cargo build --release)"
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || {
  [[ $(id -u) == 0 ]] || die "nginx is missing (apt-get install nginx-light)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light curl >&2
}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT

rm -rf "$DIR" && mkdir -p "$DIR/nginx/tmp"
read -r UP_PORT TOKEX_PORT ADMIN_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')

USER_LINE=""
[[ $(id -u) == 0 ]] && getent passwd nobody >/dev/null && USER_LINE="user nobody nogroup;"
cat >"$DIR/nginx/nginx.conf" <<CONF
$USER_LINE
worker_processes 1; daemon off; pid $DIR/nginx/nginx.pid; error_log $DIR/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $DIR/nginx/tmp/a; proxy_temp_path $DIR/nginx/tmp/b;
  fastcgi_temp_path $DIR/nginx/tmp/c; uwsgi_temp_path $DIR/nginx/tmp/d; scgi_temp_path $DIR/nginx/tmp/e;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; location / { return 200 "ok\n"; } }
}
CONF
"$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log" &
PIDS+=($!)
python3 -u "$ROOT/scripts/bench_as.py" --client-id m --client-secret m-secret --quiet \
  --token-bytes "$TOKEN_BYTES" >"$DIR/as.port" 2>"$DIR/as.log" &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $DIR/as.port ]] && break; sleep 0.1; done
AS_PORT=$(head -n 1 "$DIR/as.port")
cat >"$DIR/tokex.yaml" <<CONF
listen: 127.0.0.1:$TOKEX_PORT
admin: 127.0.0.1:$ADMIN_PORT
authorities:
  m:
    token_endpoint: http://127.0.0.1:$AS_PORT/token
    client_id: m
    auth: { method: client_secret_post, client_secret: m-secret }
    timeout: 10s
routes:
  - name: m
    match: { host: upstream.internal }
    upstream: http://127.0.0.1:$UP_PORT
    exchange: { authority: m, audience: m-api }
cache: { max_entries: $((TOKENS + TOKENS / 10)), max_ttl: 1h }
limits: { max_connections: $((CONNECTIONS + 64)), max_concurrent_exchanges: 64 }
CONF
RUST_LOG=warn TOKIO_WORKER_THREADS=1 "$TOKEX_BIN" run --config "$DIR/tokex.yaml" >"$DIR/tokex.log" 2>&1 &
TOKEX_PID=$!
PIDS+=("$TOKEX_PID")
for _ in $(seq 100); do
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz" && break
  sleep 0.1
done

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$TOKEX_PID/status"; }

python3 - "$TOKEX_PORT" "$ADMIN_PORT" "$TOKENS" "$CONNECTIONS" "$TOKEX_PID" <<'PY'
import http.client, socket, sys, threading, time
port, admin, tokens, conns, pid = (int(a) for a in sys.argv[1:])
def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
def get(c, token):
    c.request("GET", "/", headers={"Host": "upstream.internal", "Authorization": f"Bearer {token}"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
get(http.client.HTTPConnection("127.0.0.1", port), "warm-up-token")
time.sleep(1)
idle = rss()
def fill(worker, n):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(worker, tokens, n):
        get(c, f"subject-{i:08d}-{'s' * 40}")
threads = [threading.Thread(target=fill, args=(w, 16)) for w in range(16)]
started = time.time()
for t in threads: t.start()
for t in threads: t.join()
filled_in = time.time() - started
time.sleep(2)
with_tokens = rss()
metrics = http.client.HTTPConnection("127.0.0.1", admin)
metrics.request("GET", "/metrics"); text = metrics.getresponse().read().decode()
entries = next(int(l.split()[1]) for l in text.splitlines() if l.startswith("tokex_cache_entries "))
held = []
for i in range(conns):
    c = http.client.HTTPConnection("127.0.0.1", port)
    get(c, "warm-up-token")
    held.append(c)
time.sleep(1)
with_conns = rss()
print(f"| idle RSS | {idle / 1024:.1f} MB |")
print(f"| cache entries after {tokens} distinct tokens ({filled_in:.0f} s) | {entries} |")
print(f"| RSS per cached token | {(with_tokens - idle) * 1024 / entries:.0f} B |")
print(f"| RSS per idle app connection ({conns} held) | {(with_conns - with_tokens) * 1024 / conns:.0f} B |")
PY
