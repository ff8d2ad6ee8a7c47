#!/usr/bin/env bash
# Transparent-mode benchmark: the redirected path beside the explicit-proxy path, in network
# namespaces, side by side in alternating rounds.
#
#   sudo scripts/bench-transparent.sh            # needs root and target/release/tokex
#
# Layout: a "pod" namespace with tokex (as uid 65532, `tokex init` rules installed) and wrk,
# an "upstream" namespace with an nginx upstream (`return 200 "ok\n"`) and `tokex sts` as the
# authorization server, joined by a veth pair (10.252.0.1 / 10.252.0.2). Both paths serve the
# same route from the cache (the first request exchanges once):
#   explicit    wrk -> 127.0.0.1:15001 with Host: orders.internal -> tokex -> upstream
#   redirected  wrk -> http://10.252.0.2/ (no proxy settings) -> kernel redirect -> tokex -> upstream
# Reported per path: requests/s (wrk) and tokex's CPU time per request (utime+stime from
# /proc/<pid>/stat over the run, divided by the requests wrk completed), the figure that
# does not depend on how busy this shared machine is.
#
# Knobs: BENCH_DURATION=5s BENCH_ROUNDS=3 BENCH_CONNECTIONS=32 BENCH_THREADS=2
#        BENCH_TOKEX_BIN=target/release/tokex
# Tools: ip, nft, wrk, nginx, curl (Debian packages; installed with apt-get if missing).
# Everything it creates (namespaces, processes, files under target/bench-transparent/) is
# removed on exit, also on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/target/bench-transparent"
TOKEX=${BENCH_TOKEX_BIN:-$ROOT/target/release/tokex}
DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-2}
POD=tokex-bench-pod UP=tokex-bench-up POD_IP=10.252.0.1 UP_IP=10.252.0.2 UID_=65532

log() { printf '[bench-transparent] %s\n' "$*" >&2; }
[[ $(id -u) == 0 ]] || { log "run as root: it creates network namespaces and kernel rules"; exit 1; }
[[ -x $TOKEX ]] || { log "$TOKEX missing: cargo build --release"; exit 2; }
for tool in nft wrk nginx curl; do
  command -v "$tool" > /dev/null || {
    log "installing nftables wrk nginx-light curl"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nftables wrk nginx-light curl > /dev/null
    break
  }
done

cleanup() {
  for ns in $POD $UP; do
    ip netns pids "$ns" 2> /dev/null | xargs -r kill 2> /dev/null || true
    ip netns del "$ns" 2> /dev/null || true
  done
}
trap cleanup EXIT INT TERM
cleanup
rm -rf "$DIR" && mkdir -p "$DIR" && chmod 755 "$DIR"

ip netns add $POD && ip netns add $UP
ip link add tkxbp type veth peer name tkxbu
ip link set tkxbp netns $POD && ip link set tkxbu netns $UP
ip -n $POD addr add $POD_IP/24 dev tkxbp && ip -n $UP addr add $UP_IP/24 dev tkxbu
for ns in $POD $UP; do ip -n $ns link set lo up; done
ip -n $POD link set tkxbp up && ip -n $UP link set tkxbu up
ip -n $POD route add default via $UP_IP
in_pod() { ip netns exec $POD "$@"; }
in_up() { ip netns exec $UP "$@"; }

mkdir -p "$DIR/nginx/logs"
cat > "$DIR/nginx/nginx.conf" << EOF
worker_processes 1;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $DIR/nginx/body; proxy_temp_path $DIR/nginx/proxy;
  fastcgi_temp_path $DIR/nginx/fastcgi; uwsgi_temp_path $DIR/nginx/uwsgi; scgi_temp_path $DIR/nginx/scgi;
  keepalive_requests 1000000;
  server { listen $UP_IP:80; location / { return 200 "ok\n"; } }
}
EOF
in_up nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf"

cat > "$DIR/sts.yaml" << EOF
listen: $UP_IP:8400
realms:
  client:
    clients:
      web-app: { client_secret: web-secret, grants: [client_credentials], audiences: [backend], subject: alice }
  backend:
    trust: [{ realm: client, audiences: [backend] }]
    clients:
      tokex: { client_secret: tokex-secret, grants: [token_exchange], audiences: [orders-api] }
EOF
in_up "$TOKEX" sts --config "$DIR/sts.yaml" 2> "$DIR/sts.log" &

cat > "$DIR/tokex.yaml" << EOF
authorities:
  backend:
    token_endpoint: http://$UP_IP:8400/realms/backend/token
    allow_insecure_http: true
    issuer: http://$UP_IP:8400/realms/backend
    client_id: tokex
    auth: { method: client_secret_basic, client_secret: tokex-secret }
routes:
  - name: orders
    match: { host: orders.internal }
    upstream: http://$UP_IP:80
    exchange: { authority: backend, audience: orders-api }
  - name: orders-redirected
    match: { destination: '$UP_IP:80' }
    upstream: http://$UP_IP:80
    exchange: { authority: backend, audience: orders-api }
transparent: { ports: [80], proxy_uid: $UID_ }
EOF
chmod 644 "$DIR"/*.yaml
in_pod "$TOKEX" init --config "$DIR/tokex.yaml" >&2
for _ in $(seq 100); do in_up curl -sf "http://$UP_IP:8400/realms/client/.well-known/oauth-authorization-server" > /dev/null && break; sleep 0.1; done
TOKEN=$(in_up curl -sf -u web-app:web-secret -d grant_type=client_credentials "http://$UP_IP:8400/realms/client/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
in_pod env TOKIO_WORKER_THREADS=1 setpriv --reuid $UID_ --regid $UID_ --clear-groups "$TOKEX" run --config "$DIR/tokex.yaml" 2> "$DIR/tokex.log" &
for _ in $(seq 100); do in_pod curl -sf http://127.0.0.1:15000/readyz > /dev/null && break; sleep 0.1; done
TOKEX_PID=$(pgrep -f "tokex run --config $DIR/tokex.yaml" | head -1)

declare -A URL=([explicit]=http://127.0.0.1:15001/ [redirected]=http://$UP_IP/)
declare -A HOSTH=([explicit]="Host: orders.internal" [redirected]="Host: $UP_IP")
for path in explicit redirected; do
  code=$(in_pod curl -s -o /dev/null -w '%{http_code}' -H "${HOSTH[$path]}" -H "Authorization: Bearer $TOKEN" "${URL[$path]}")
  [[ $code == 200 ]] || { log "$path: sanity request got $code"; exit 3; }
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$TOKEX_PID/stat"; }
HZ=$(getconf CLK_TCK)
printf '| round | path | requests/s | tokex CPU µs/request |\n| --- | --- | --- | --- |\n'
for round in $(seq "$ROUNDS"); do
  for path in explicit redirected; do
    before=$(cpu_ticks)
    out=$(in_pod wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -H "${HOSTH[$path]}" -H "Authorization: Bearer $TOKEN" "${URL[$path]}")
    after=$(cpu_ticks)
    requests=$(awk '/requests in/ {print $1}' <<< "$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
    if grep -q "Non-2xx" <<< "$out"; then log "$path: non-2xx responses"; echo "$out" >&2; exit 3; fi
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    printf '| %s | %s | %s | %s |\n' "$round" "$path" "$rps" "$cpu"
  done
done
