#!/usr/bin/env bash
# Instructions per cache hit, under callgrind: exact and repeatable on a noisy machine,
# where requests per second are not.
#
#   scripts/hit-instructions.sh BIN [BIN...]     # e.g. a release build of main and of a branch
#
# Each binary serves N1 and then N2 requests with one subject token on one keep-alive
# connection (one exchange at scripts/bench_as.py, the rest cache hits, through the
# connection's memory of its last token) to a local upstream, on one tokio worker thread.
# It prints, per binary and round, the instructions of the whole process per extra request,
# (I(N2) - I(N1)) / (N2 - N1), and the part inside `Proxy::handle`, tokex's own request
# path. The binaries take turns, so drift on the machine spreads over all of them.
# Needs valgrind (callgrind_annotate) and python3.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,12p' "$0" >&2; exit 1; }
n1=${HIT_N1:-200} n2=${HIT_N2:-1200} rounds=${HIT_ROUNDS:-2}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

python3 "$here/bench_as.py" --quiet > "$work/as.port" &
python3 - "$work/up.port" <<'PY' &
import http.server, sys
class Up(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Up)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
for f in as.port up.port; do
  for _ in $(seq 100); do [ -s "$work/$f" ] && break; sleep 0.1; done
done
as_port=$(head -1 "$work/as.port"); up_port=$(cat "$work/up.port")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/tokex.yaml" <<YAML
listen: 127.0.0.1:$port
admin: 127.0.0.1:0
authorities:
  main:
    token_endpoint: http://127.0.0.1:$as_port/token
    client_id: c
    auth: { method: client_secret_basic, client_secret: s }
routes:
  - name: echo
    match: { host: echo.internal }
    upstream: http://127.0.0.1:$up_port
    exchange: { authority: main, audience: x }
YAML

# Instructions of BIN serving N requests: the process's, and Proxy::handle's inclusive.
run() {
  local bin=$1 n=$2 out="$work/cg.out"
  TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" run -c "$work/tokex.yaml" > /dev/null 2> "$work/vg.log" &
  local vg=$!
  python3 - "$port" "$n" <<'PY'
import http.client, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120); c.connect(); break
    except OSError:
        time.sleep(0.1)
for _ in range(n):
    c.request("GET", "/x", headers={"Host": "echo.internal", "Authorization": "Bearer subject-token"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"tokex answered {r.status}")
PY
  kill -TERM "$vg"; wait "$vg" || true
  local total handle
  total=$(sed -n 's/^summary: //p' "$out")
  handle=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null \
    | grep -F 'tokex::proxy::Proxy::handle::{{closure}}' | head -1 | awk '{gsub(",","",$1); print $1}' || true)
  echo "$total ${handle:-0}"
}

printf '%-6s %-40s %12s %12s\n' round binary per-request in-handle
for round in $(seq "$rounds"); do
  for bin in "$@"; do
    read -r t1 h1 < <(run "$bin" "$n1")
    read -r t2 h2 < <(run "$bin" "$n2")
    printf '%-6s %-40s %12d %12d\n' "$round" "$bin" $(( (t2 - t1) / (n2 - n1) )) $(( (h2 - h1) / (n2 - n1) ))
  done
done
