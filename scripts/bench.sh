#!/usr/bin/env bash
# Load benchmark: tokex (cache-hit path) vs nginx reverse proxy vs direct, side by side.
#
#   scripts/bench.sh                                  # full run (needs target/release/tokex)
#   BENCH_SKIP_TOKEX=1 BENCH_DURATION=3s scripts/bench.sh   # direct + nginx rows only
#
# What it measures (wrk, same parameters and same headers for every target):
#   1. direct       wrk -> upstream nginx (`return 200 "ok\n"`)
#   2. tokex        wrk -> tokex -> upstream nginx; the sanity request before the warm-up does
#                   the one token exchange at the mock AS (scripts/bench_as.py), so every
#                   request that is measured is a cache hit. The mock AS's request counter is
#                   printed afterwards and must be 1.
#   3. nginx proxy  wrk -> nginx (proxy_pass, HTTP/1.1 keep-alive, `keepalive 64`) -> upstream
#
# Process layout and the fairness choice:
#   The upstream and the nginx proxy are two *separate* nginx instances (own prefix, config, pid
#   file, logs and temp paths under target/bench/), so the proxy nginx's workers never serve the
#   upstream's requests themselves. Both run `worker_processes 1` by default, and tokex gets
#   the same: TOKIO_WORKER_THREADS=1, which runs tokex on tokio's current-thread runtime (more
#   than 1 gives the multi-thread runtime with that many workers; the script prints tokex's
#   OS thread count so you can check). So each proxy
#   path is: wrk (BENCH_THREADS threads) + one proxy worker + one upstream worker on this
#   2-core machine, and both proxies get exactly the same CPU budget.
#   BENCH_WORKERS=2 gives both proxies 2 workers/threads instead (more throughput, more
#   contention with wrk and the upstream on 2 cores).
#
# Knobs (environment):
#   BENCH_DURATION=5s   BENCH_CONNECTIONS=32  BENCH_THREADS=2  BENCH_WARMUP=2s
#   BENCH_ROUNDS=5            rounds; each runs every target once, in turn
#   BENCH_WORKERS=1           nginx proxy worker_processes and tokex TOKIO_WORKER_THREADS
#   BENCH_UPSTREAM_WORKERS=1  upstream nginx worker_processes
#   BENCH_SKIP_TOKEX=1        skip the tokex row (no tokex binary needed)
#   BENCH_TOKEX_BIN=...       default target/release/tokex
#   BENCH_BASELINE_BIN=...    a second tokex binary (say, a build of an earlier commit) run
#                             as one more target in the same alternating rounds, for
#                             before/after numbers measured side by side
#   BENCH_SUBJECT=opaque      the app's token: opaque (default) or jwt, a JWT-shaped token
#                             of typical size whose `exp` tokex reads before each lookup
#   BENCH_FIELDS=minimal      request fields: minimal (Host and Authorization, default) or
#                             typical (10 more, as a service's HTTP client sends them)
#   BENCH_UPSTREAM=http       the upstream's scheme: http (default) or https. With https,
#                             the upstream nginx serves TLS 1.3 (HTTP/1.1 by ALPN) with a
#                             certificate from a CA made here; the nginx proxy verifies it
#                             (proxy_ssl_verify on, proxy_ssl_session_reuse on) and tokex
#                             trusts the CA by the route's ca_file, as in production.
#
# Tools: wrk and nginx-light (or nginx) from Debian packages, installed with apt-get only if
# missing; python3 (stdlib only) and curl. Only 127.0.0.1 is ever used, on ports picked free at
# run time. Every process started here is stopped on exit (trap EXIT), also on failure.
# Results: a markdown table on stdout; raw wrk outputs, configs and logs in target/bench/.
#
# Exit codes: 0 ok; 1 setup failure; 2 target/release/tokex missing (without BENCH_SKIP_TOKEX=1);
#             3 the benchmark ran but a result is invalid (non-2xx responses, or the mock AS
#               saw a number of token requests other than 1).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR="$ROOT/target/bench"

DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-5}
CONNS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-2}
WARMUP=${BENCH_WARMUP:-2s}
WORKERS=${BENCH_WORKERS:-1}
UPSTREAM_WORKERS=${BENCH_UPSTREAM_WORKERS:-1}
SKIP_TOKEX=${BENCH_SKIP_TOKEX:-0}
TOKEX_BIN=${BENCH_TOKEX_BIN:-$ROOT/target/release/tokex}
BASELINE_BIN=${BENCH_BASELINE_BIN:-}

SUBJECT=${BENCH_SUBJECT:-opaque}
UPSTREAM_SCHEME=${BENCH_UPSTREAM:-http}
case $UPSTREAM_SCHEME in
  http | https) ;;
  *) printf '[bench] error: BENCH_UPSTREAM must be http or https (got %s)\n' "$UPSTREAM_SCHEME" >&2; exit 1 ;;
esac

HOST_HDR="upstream.internal"
case $SUBJECT in
  opaque) SUBJECT_TOKEN="benchsubjecttoken0123456789" ;;   # tokex skips the local exp check
  jwt) # unsigned is fine: tokex reads exp, the bench AS accepts any subject
    SUBJECT_TOKEN=$(python3 -c '
import base64, json, time
enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
claims = {"iss": "https://idp.example.com/realms/bench", "sub": "3f0c2a1e-bench-user",
          "aud": "frontend", "azp": "frontend", "scope": "openid profile email orders:read",
          "iat": int(time.time()), "exp": int(time.time()) + 86400, "jti": "b" * 36}
print(enc({"alg": "RS256", "typ": "JWT", "kid": "bench-key-1"}) + "." + enc(claims) + "." + "s" * 342)') ;;
  *) printf '[bench] error: BENCH_SUBJECT must be opaque or jwt (got %s)\n' "$SUBJECT" >&2; exit 1 ;;
esac
AUTH_HDR="Authorization: Bearer $SUBJECT_TOKEN"
FIELDS=${BENCH_FIELDS:-minimal}
EXTRA_HDRS=()
case $FIELDS in
  minimal) ;;
  typical)
    for h in 'User-Agent: orders-service/2.14.1 (okhttp/4.12.0)' 'Accept: application/json' \
      'Accept-Encoding: gzip, deflate' 'Content-Type: application/json' \
      'X-Request-Id: 6f1c2b4e-8a9d-4c3b-9e2f-1a2b3c4d5e6f' \
      'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
      'X-Forwarded-For: 10.12.4.17' 'X-Tenant: acme-eu-1' \
      'Accept-Language: en-US,en;q=0.9' 'Cache-Control: no-cache'; do
      EXTRA_HDRS+=(-H "$h")
    done ;;
  *) printf '[bench] error: BENCH_FIELDS must be minimal or typical (got %s)\n' "$FIELDS" >&2; exit 1 ;;
esac

log() { printf '[bench] %s\n' "$*" >&2; }
die() { local code=$1; shift; printf '[bench] error: %s\n' "$*" >&2; exit "$code"; }

# ---------------------------------------------------------------------------------------------
# Argument checks (before anything is started or installed)
# ---------------------------------------------------------------------------------------------
for v in CONNS THREADS WORKERS UPSTREAM_WORKERS ROUNDS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die 1 "$v must be a positive integer (got '${!v}')"
done
for v in DURATION WARMUP; do
  [[ ${!v} =~ ^[1-9][0-9]*[smh]?$ ]] || die 1 "$v must look like 10s / 1m (got '${!v}')"
done
(( CONNS >= THREADS )) || die 1 "BENCH_CONNECTIONS ($CONNS) must be >= BENCH_THREADS ($THREADS)"

if [[ $SKIP_TOKEX != 1 && ! -x $TOKEX_BIN ]]; then
  printf '[bench] error: %s does not exist (build it with `cargo build --release`),\n' "$TOKEX_BIN" >&2
  printf '[bench]        or run with BENCH_SKIP_TOKEX=1 to bench only direct and nginx.\n' >&2
  exit 2
fi

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup
# ---------------------------------------------------------------------------------------------
PIDS=()    # every background process this script started
NAMES=()
WRK_PID="" # the wrk run in progress, if any

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i pid kids=() n
  [[ -n $WRK_PID ]] && PIDS+=("$WRK_PID")
  for i in "${!PIDS[@]}"; do
    pid=${PIDS[$i]}
    # nginx masters fork workers: remember the children so none outlives its master.
    if command -v pgrep >/dev/null 2>&1; then
      while read -r n; do [[ -n $n ]] && kids+=("$n"); done < <(pgrep -P "$pid" 2>/dev/null || true)
    fi
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}" "${kids[@]}"; do
    for ((n = 0; n < 50; n++)); do          # up to 5 s each, then SIGKILL
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "process $pid did not stop on SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

track() { PIDS+=("$1"); NAMES+=("$2"); }

alive_or_die() {   # pid name logfile
  if ! kill -0 "$1" 2>/dev/null; then
    log "$2 exited early; last lines of $3:"
    tail -n 30 "$3" >&2 || true
    die 1 "$2 failed to start"
  fi
}

# wait_http NAME PID LOG URL: wait (bounded, 10 s) until URL answers 200.
wait_http() {
  local name=$1 pid=$2 logf=$3 url=$4 i code
  for ((i = 0; i < 100; i++)); do
    alive_or_die "$pid" "$name" "$logf"
    code=$(curl -sk --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
    [[ $code == 200 ]] && return 0
    sleep 0.1
  done
  tail -n 30 "$logf" >&2 || true
  die 1 "$name did not answer 200 at $url within 10 s (last status: ${code:-none})"
}

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
find_nginx() {
  if command -v nginx >/dev/null 2>&1; then command -v nginx
  elif [[ -x /usr/sbin/nginx ]]; then echo /usr/sbin/nginx
  fi
}

ensure_tools() {
  local need=() pkg
  command -v python3 >/dev/null 2>&1 || die 1 "python3 is required"
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  if [[ -z $(find_nginx) ]]; then
    pkg=nginx
    need+=(__nginx__)
  fi
  ((${#need[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die 1 "missing tools (${need[*]}); install them as root: apt-get install -y wrk nginx-light"
  command -v apt-get >/dev/null 2>&1 || die 1 "missing tools (${need[*]}) and no apt-get"
  log "installing missing tools with apt-get: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  if [[ " ${need[*]} " == *" __nginx__ "* ]]; then
    # nginx-light where the release still has it (Debian 12), plain nginx otherwise.
    local policy
    policy=$(apt-cache policy nginx-light 2>/dev/null || true)   # no `| grep -q`: SIGPIPE + pipefail
    if [[ $policy =~ Candidate:\ [0-9] ]]; then pkg=nginx-light; fi
    need=("${need[@]/__nginx__/$pkg}")
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
  command -v wrk >/dev/null 2>&1 || die 1 "wrk still missing after apt-get install"
  [[ -n $(find_nginx) ]] || die 1 "nginx still missing after apt-get install"
}

ensure_tools
NGINX=$(find_nginx)
# Raise the open-files soft limit to the hard limit (nginx, tokex and wrk inherit it).
hard_nofile=$(ulimit -Hn)
[[ $hard_nofile == unlimited ]] && hard_nofile=65536
ulimit -n "$hard_nofile" 2>/dev/null || true

# Fresh work directory (fixed path inside the repo's target/).
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"

# Free loopback ports, picked now: upstream, nginx proxy, tokex listen, tokex admin.
# (The mock AS binds port 0 itself and reports its port.)
read -r UP_PORT NGX_PORT TOKEX_PORT ADMIN_PORT BASE_PORT BASE_ADMIN < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
[[ -n ${ADMIN_PORT:-} ]] || die 1 "could not pick free ports"

# ---------------------------------------------------------------------------------------------
# TLS for BENCH_UPSTREAM=https: a CA and a leaf for 127.0.0.1 and localhost
# ---------------------------------------------------------------------------------------------
TLS_DIR="$BENCH_DIR/tls"
UP_LISTEN="listen 127.0.0.1:$UP_PORT;"
UP_URL="http://127.0.0.1:$UP_PORT"
PROXY_TLS=""
TOKEX_CA=""
if [[ $UPSTREAM_SCHEME == https ]]; then
  command -v openssl >/dev/null 2>&1 || die 1 "openssl is required for BENCH_UPSTREAM=https"
  mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=tokex bench CA" -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$TLS_DIR/leaf.key" -out "$TLS_DIR/leaf.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TLS_DIR/ext.cnf"
  openssl x509 -req -in "$TLS_DIR/leaf.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/leaf.pem" 2>/dev/null
  UP_LISTEN="listen 127.0.0.1:$UP_PORT ssl;
        ssl_certificate $TLS_DIR/leaf.pem;
        ssl_certificate_key $TLS_DIR/leaf.key;
        ssl_protocols TLSv1.3;
        keepalive_timeout 75s;"
  UP_URL="https://127.0.0.1:$UP_PORT"
  PROXY_TLS="proxy_ssl_protocols TLSv1.3;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $TLS_DIR/ca.pem;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;"
  TOKEX_CA="    ca_file: $TLS_DIR/ca.pem"
fi

# ---------------------------------------------------------------------------------------------
# nginx: two instances, each with its own prefix under target/bench/
# ---------------------------------------------------------------------------------------------
NGINX_USER_LINE=""
if [[ $(id -u) == 0 ]]; then
  # As root, nginx drops its workers to an unprivileged user; name one that exists on Debian.
  if getent passwd nobody >/dev/null && getent group nogroup >/dev/null; then
    NGINX_USER_LINE="user nobody nogroup;"
  fi
fi

# start_nginx NAME WORKERS HTTP_BODY: writes the config, checks it, starts nginx (daemon off,
# in the background) and records its pid.
start_nginx() {
  local name=$1 workers=$2 http_body=$3
  local p="$BENCH_DIR/nginx-$name"
  mkdir -p "$p/tmp"
  cat >"$p/nginx.conf" <<EOF
# generated by scripts/bench.sh
$NGINX_USER_LINE
worker_processes $workers;
daemon off;
master_process on;
pid $p/nginx.pid;
error_log $p/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $p/tmp/client_body;
    proxy_temp_path       $p/tmp/proxy;
    fastcgi_temp_path     $p/tmp/fastcgi;
    uwsgi_temp_path       $p/tmp/uwsgi;
    scgi_temp_path        $p/tmp/scgi;
    default_type text/plain;
    keepalive_timeout 75s;
    keepalive_requests 1000000;   # the default (1000) would close client connections mid-run
$http_body
}
EOF
  "$NGINX" -p "$p" -c "$p/nginx.conf" -e "$p/error.log" -t >"$p/configtest.log" 2>&1 || {
    cat "$p/configtest.log" >&2
    die 1 "nginx-$name config test failed"
  }
  "$NGINX" -p "$p" -c "$p/nginx.conf" -e "$p/error.log" >"$p/stdout.log" 2>&1 &
  track $! "nginx-$name"
  LAST_PID=$!
}

start_nginx upstream "$UPSTREAM_WORKERS" "
    server {
        $UP_LISTEN
        server_name _;
        location / {
            return 200 \"ok\n\";
        }
    }"
UP_PID=$LAST_PID

start_nginx proxy "$WORKERS" "
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
        server_name _;
        location / {
            proxy_pass $UPSTREAM_SCHEME://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            $PROXY_TLS
        }
    }"
NGX_PID=$LAST_PID

wait_http nginx-upstream "$UP_PID" "$BENCH_DIR/nginx-upstream/error.log" "$UP_URL/"
wait_http nginx-proxy "$NGX_PID" "$BENCH_DIR/nginx-proxy/error.log" "http://127.0.0.1:$NGX_PORT/"

# ---------------------------------------------------------------------------------------------
# Mock AS and tokex
# ---------------------------------------------------------------------------------------------
as_count() {
  curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$AS_PORT/stats" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token_requests"])'
}

if [[ $SKIP_TOKEX != 1 ]]; then
  python3 -u "$SCRIPT_DIR/bench_as.py" --client-id bench --client-secret bench-secret \
    >"$BENCH_DIR/as.port" 2>"$BENCH_DIR/as.log" &
  AS_PID=$!
  track "$AS_PID" mock-as
  AS_PORT=""
  for ((i = 0; i < 100; i++)); do
    alive_or_die "$AS_PID" mock-as "$BENCH_DIR/as.log"
    AS_PORT=$(head -n 1 "$BENCH_DIR/as.port" 2>/dev/null || true)
    [[ $AS_PORT =~ ^[0-9]+$ ]] && break
    sleep 0.1
  done
  [[ $AS_PORT =~ ^[0-9]+$ ]] || die 1 "mock AS did not report its port"
  wait_http mock-as "$AS_PID" "$BENCH_DIR/as.log" "http://127.0.0.1:$AS_PORT/healthz"

  cat >"$BENCH_DIR/tokex.yaml" <<EOF
# generated by scripts/bench.sh
listen: 127.0.0.1:$TOKEX_PORT
admin: 127.0.0.1:$ADMIN_PORT
authorities:
  bench:
    token_endpoint: http://127.0.0.1:$AS_PORT/token
    client_id: bench
    auth: { method: client_secret_post, client_secret: bench-secret }
routes:
  - name: bench
    match: { host: $HOST_HDR }
    upstream: $UP_URL
$TOKEX_CA
    exchange: { authority: bench, audience: bench-api }
cache: { max_ttl: 10m, early_expiry: 30s }
EOF
  RUST_LOG=warn TOKIO_WORKER_THREADS=$WORKERS \
    "$TOKEX_BIN" run --config "$BENCH_DIR/tokex.yaml" >"$BENCH_DIR/tokex.log" 2>&1 &
  TOKEX_PID=$!
  track "$TOKEX_PID" tokex
  wait_http tokex "$TOKEX_PID" "$BENCH_DIR/tokex.log" "http://127.0.0.1:$ADMIN_PORT/readyz"
  if [[ -n $BASELINE_BIN ]]; then
    [[ -x $BASELINE_BIN ]] || die 2 "BENCH_BASELINE_BIN=$BASELINE_BIN is not an executable"
    sed -e "s/^listen: .*/listen: 127.0.0.1:$BASE_PORT/" -e "s/^admin: .*/admin: 127.0.0.1:$BASE_ADMIN/" \
      "$BENCH_DIR/tokex.yaml" >"$BENCH_DIR/baseline.yaml"
    RUST_LOG=warn TOKIO_WORKER_THREADS=$WORKERS \
      "$BASELINE_BIN" run --config "$BENCH_DIR/baseline.yaml" >"$BENCH_DIR/baseline.log" 2>&1 &
    BASE_PID=$!
    track "$BASE_PID" baseline
    wait_http baseline "$BASE_PID" "$BENCH_DIR/baseline.log" "http://127.0.0.1:$BASE_ADMIN/readyz"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Sanity: one request per target must give 200 "ok" (for tokex this is the one exchange)
# ---------------------------------------------------------------------------------------------
TARGETS=(direct)
declare -A URL LABEL
URL[direct]="$UP_URL/";    LABEL[direct]="direct (upstream nginx)"
URL[tokex]="http://127.0.0.1:$TOKEX_PORT/";  LABEL[tokex]="tokex (cache hit)"
URL[nginx]="http://127.0.0.1:$NGX_PORT/";    LABEL[nginx]="nginx proxy (keepalive 64)"
URL[baseline]="http://127.0.0.1:$BASE_PORT/"; LABEL[baseline]="baseline tokex (cache hit)"
[[ $SKIP_TOKEX != 1 ]] && TARGETS+=(tokex)
[[ $SKIP_TOKEX != 1 && -n $BASELINE_BIN ]] && TARGETS+=(baseline)
TARGETS+=(nginx)

for t in "${TARGETS[@]}"; do
  out=$(curl -sk --noproxy '*' --max-time 5 -H "Host: $HOST_HDR" -H "$AUTH_HDR" \
    -w '\n%{http_code}' "${URL[$t]}" || true)
  code=${out##*$'\n'}
  body=${out%$'\n'*}
  body=${body%$'\n'}     # the upstream answers "ok\n"
  if [[ $code != 200 || $body != ok ]]; then
    [[ $t == tokex ]] && { log "last lines of tokex.log:"; tail -n 30 "$BENCH_DIR/tokex.log" >&2 || true; }
    die 1 "sanity request to $t (${URL[$t]}) gave status '$code' body '${body:0:300}', want 200 'ok'"
  fi
done
if [[ $SKIP_TOKEX != 1 ]]; then
  log "tokex answered 200 through the exchange; mock AS token requests so far: $(as_count)"
  log "tokex OS threads: $(awk '/^Threads:/ {print $2}' "/proc/$TOKEX_PID/status" 2>/dev/null || echo '?')" \
      "(TOKIO_WORKER_THREADS=$WORKERS, plus tokio's blocking/other threads)"
fi

# ---------------------------------------------------------------------------------------------
# wrk runs
# ---------------------------------------------------------------------------------------------
log "machine: $(nproc) cores; $(wrk --version 2>&1 | awk 'NR == 1 {print $1, $2}' || true); $("$NGINX" -v 2>&1 | head -n 1)"
log "wrk -t$THREADS -c$CONNS -d$DURATION --latency (warm-up $WARMUP each);" \
    "nginx proxy workers=$WORKERS, tokex TOKIO_WORKER_THREADS=$WORKERS, upstream nginx workers=$UPSTREAM_WORKERS"

run_wrk() {   # target duration outfile
  # In the background + `wait`, so a SIGTERM/SIGINT to this script is handled at once (bash
  # defers traps while a foreground child runs) and the cleanup also stops this wrk.
  wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency \
    -H "Host: $HOST_HDR" -H "$AUTH_HDR" "${EXTRA_HDRS[@]}" "${URL[$1]}" >"$3" 2>&1 &
  WRK_PID=$!
  local rc=0
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  if ((rc != 0)); then
    cat "$3" >&2
    die 1 "wrk failed against $1 (exit $rc)"
  fi
}

# The processes whose CPU time is charged to a target: nginx's worker(s), or tokex.
declare -A CPU_PIDS
CPU_PIDS[direct]=$(pgrep -P "$UP_PID" | tr '\n' ' ')
CPU_PIDS[nginx]=$(pgrep -P "$NGX_PID" | tr '\n' ' ')
[[ $SKIP_TOKEX != 1 ]] && CPU_PIDS[tokex]=$TOKEX_PID
[[ -n $BASELINE_BIN ]] && CPU_PIDS[baseline]=$BASE_PID

cpu_ticks() {   # utime stime, summed over the given pids
  local u=0 s=0 pid a b
  for pid in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$pid/stat")
    u=$((u + a)); s=$((s + b))
  done
  echo "$u $s"
}

for t in "${TARGETS[@]}"; do
  log "warm-up $t ($WARMUP) ..."
  run_wrk "$t" "$WARMUP" "$BENCH_DIR/wrk-$t-warmup.txt"
done
# Rounds alternate the targets (in a rotating order), so a slow spell of this shared
# machine hits all of them alike; the report takes medians and the per-round
# tokex/nginx ratio.
for ((r = 1; r <= ROUNDS; r++)); do
  # Each round starts at a different target, so no target always follows the same one.
  for ((k = 0; k < ${#TARGETS[@]}; k++)); do
    t=${TARGETS[$(((r + k) % ${#TARGETS[@]}))]}
    log "round $r/$ROUNDS: $t ($DURATION) ..."
    # shellcheck disable=SC2086
    read -r u0 s0 < <(cpu_ticks ${CPU_PIDS[$t]})
    run_wrk "$t" "$DURATION" "$BENCH_DIR/wrk-$t-$r.txt"
    # shellcheck disable=SC2086
    read -r u1 s1 < <(cpu_ticks ${CPU_PIDS[$t]})
    echo "$((u1 - u0)) $((s1 - s0))" >"$BENCH_DIR/cpu-$t-$r.txt"
  done
done

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
INVALID=0
ROWS=()
declare -A MEDIAN_RPS
for t in "${TARGETS[@]}"; do
  for ((r = 1; r <= ROUNDS; r++)); do
    f="$BENCH_DIR/wrk-$t-$r.txt"
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$f")
    sockerr=$(sed -n 's/^ *Socket errors: *//p' "$f")
    if [[ -n $non2xx && $non2xx != 0 ]]; then
      log "WARNING: $t round $r: $non2xx responses were not 2xx/3xx (see $f)"
      INVALID=1
    fi
    [[ -n $sockerr ]] && log "WARNING: $t round $r: socket errors: $sockerr"
  done
  # One line per round: rps p50 p99 requests user-ticks sys-ticks; the median round by rps.
  row=$(for ((r = 1; r <= ROUNDS; r++)); do
      f="$BENCH_DIR/wrk-$t-$r.txt"
      printf '%s %s %s %s %s\n' \
        "$(awk '/^Requests\/sec:/ {print $2}' "$f")" \
        "$(awk '$1 == "50%" {print $2}' "$f")" \
        "$(awk '$1 == "99%" {print $2}' "$f")" \
        "$(awk '/ requests in / {print $1}' "$f")" \
        "$(cat "$BENCH_DIR/cpu-$t-$r.txt")"
    done | python3 -c '
import statistics, sys
tck = int(sys.argv[1])
rows = [l.split() for l in sys.stdin if l.strip()]
if not rows or any(len(r) != 6 for r in rows):
    sys.exit("could not parse wrk output")
rows.sort(key=lambda r: float(r[0]))
mid = rows[len(rows) // 2]
rps = " / ".join(f"{float(r[0]) / 1000:.1f}k" for r in rows)
user = statistics.median(int(r[4]) / tck * 1e6 / int(r[3]) for r in rows)
sys_ = statistics.median(int(r[5]) / tck * 1e6 / int(r[3]) for r in rows)
print(f"{float(mid[0]):.0f}|{mid[1]}|{mid[2]}|{user:.2f} + {sys_:.2f}|{rps}")
' "$(getconf CLK_TCK)") || die 1 "could not parse the wrk outputs of $t"
  IFS='|' read -r rps p50 p99 cpu all <<<"$row"
  MEDIAN_RPS[$t]=$rps
  ROWS+=("| ${LABEL[$t]} | $rps | $p50 | $p99 | $cpu | $all |")
done

# The median of per-round throughput ratios of target $1 to nginx.
ratio_to_nginx() {
  for ((r = 1; r <= ROUNDS; r++)); do
    printf '%s %s\n' "$(awk '/^Requests\/sec:/ {print $2}' "$BENCH_DIR/wrk-$1-$r.txt")" \
      "$(awk '/^Requests\/sec:/ {print $2}' "$BENCH_DIR/wrk-nginx-$r.txt")"
  done | python3 -c '
import statistics, sys
ratios = sorted(float(a) / float(b) for a, b in (l.split() for l in sys.stdin if l.strip()))
rounds = ", ".join("%.2f" % x for x in ratios)
print("%.2f (rounds: %s)" % (statistics.median(ratios), rounds))
'
}
RATIO=""
BASE_RATIO=""
if [[ $SKIP_TOKEX != 1 ]]; then
  RATIO=$(ratio_to_nginx tokex)
  [[ -n $BASELINE_BIN ]] && BASE_RATIO=$(ratio_to_nginx baseline)
fi

if [[ $SKIP_TOKEX != 1 ]]; then
  N_AS=$(as_count || echo '?')
  EXPECTED_AS=1
  [[ -n $BASELINE_BIN ]] && EXPECTED_AS=2
  log "mock AS token requests during the tokex run (sanity + warm-up + measurement): $N_AS (expected $EXPECTED_AS)"
  if [[ $N_AS != "$EXPECTED_AS" ]]; then
    log "WARNING: expected exactly $EXPECTED_AS token exchange(s); the tokex rows are not pure cache-hit measurements"
    INVALID=1
  fi
  if metrics=$(curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics"); then
    printf '%s\n' "$metrics" >"$BENCH_DIR/tokex-metrics.txt"
    grep -E '^tokex_(cache_hits_total|cache_misses_total|exchanges_total)' <<<"$metrics" |
      sed 's/^/[bench]   /' >&2 || true
  fi
fi

echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION x $ROUNDS rounds, $(nproc) cores, proxy workers=$WORKERS, upstream workers=$UPSTREAM_WORKERS, upstream: $UPSTREAM_SCHEME, subject token: $SUBJECT, request fields: $FIELDS"
echo
echo "| target | req/s (median) | p50 | p99 | CPU µs/request (user + sys) | req/s per round |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
printf '%s\n' "${ROWS[@]}"
[[ -n $RATIO ]] && echo && echo "tokex / nginx throughput, median of per-round ratios: $RATIO"
[[ -n $BASE_RATIO ]] && echo "baseline / nginx throughput, median of per-round ratios: $BASE_RATIO"
[[ $SKIP_TOKEX == 1 ]] && echo && echo "(tokex skipped: BENCH_SKIP_TOKEX=1)"
echo
echo "raw wrk outputs, configs and logs: $BENCH_DIR/"

((INVALID == 0)) || exit 3
