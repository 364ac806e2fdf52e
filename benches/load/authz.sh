#!/usr/bin/env bash
# External authorization load comparison (issue 11), side by side on one
# Linux machine, loopback only, in the style of compare.sh:
#
#   backend        nginx `return 200` (the upstream of every target; also
#                  serves the JWKS)
#   nginx          nginx alone: a plain `proxy_pass` in front of the backend
#   nginx-authz    nginx with the shipped auth_request snippets
#                  (deploy/nginx/consent-authz-*.conf) asking the gateway's
#                  HTTP authorization listener (server.authz.listen) about
#                  every request, then proxying to the backend
#   gw-proxy       consent-gateway as the proxy (the same consent route)
#
# Scenarios, identical wrk settings against every target, the consent route
# /income/<fnr>/2025 (subject and metadata bound to the path):
#   reused   one valid token on every request (as real clients do)
#   fresh    a pool of distinct valid tokens larger than the gateway's
#            verified-token cache, cycled: a fresh RS256 verification on
#            (nearly) every request
#
# CPU per request is that of the target's own processes (from
# /proc/<pid>/stat utime+stime): nginx for `nginx`, nginx and the gateway for
# `nginx-authz`, the gateway for `gw-proxy`; the backend is not counted.
# wrk runs on core WRK_CPU, everything else on PROXY_CPU.
#
# Usage: benches/load/authz.sh            (from the repository root)
# Environment (all optional): DURATION=10s CONNECTIONS=50 THREADS=1 ROUNDS=1
#   POOL=100000 (distinct tokens for `fresh`; the cache holds 10,000)
#   SCENARIOS="reused fresh"  SKIP_BUILD=1  WRK_CPU=0 PROXY_CPU=1
#   KEEP_WORKDIR=1  CARGO_TARGET_DIR
# Needs: nginx, wrk, taskset, curl (Debian: nginx-light wrk util-linux curl;
# installed with apt-get when run as root).
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-1}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
POOL=${POOL:-100000}
SCENARIOS=${SCENARIOS:-"reused fresh"}
WRK_CPU=${WRK_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/consent-gateway-authz-load.XXXXXX)
PIDS=()

log() { printf '%s\n' "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    if [ -z "${KEEP_WORKDIR:-}" ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT INT TERM

# --- tools -------------------------------------------------------------------
need_install=()
command -v nginx >/dev/null || need_install+=(nginx-light)
command -v wrk >/dev/null || need_install+=(wrk)
command -v taskset >/dev/null || need_install+=(util-linux)
command -v curl >/dev/null || need_install+=(curl)
if [ ${#need_install[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${need_install[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
    else
        log "missing tools; install the Debian packages: ${need_install[*]}"
        exit 2
    fi
fi
if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 cores (wrk on one, the targets on another)"
    exit 2
fi

# --- build -------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin consent-gateway --example bench_tokens)
fi
GATEWAY=$TARGET/release/consent-gateway
BENCH_TOKENS=$TARGET/release/examples/bench_tokens
for bin in "$GATEWAY" "$BENCH_TOKENS"; do
    [ -x "$bin" ] || { log "missing $bin (build it, or unset SKIP_BUILD)"; exit 2; }
done

# --- ports -------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local p
    while :; do
        p=$(( (RANDOM * 32768 + RANDOM) % 20000 + 30000 ))
        port_in_use "$p" || { echo "$p"; return; }
    done
}
BACKEND_PORT=$(pick_port) NGINX_PORT=$(pick_port) NGINX_AUTHZ_PORT=$(pick_port)
GW_PORT=$(pick_port) ADMIN_PORT=$(pick_port) AUTHZ_PORT=$(pick_port)

wait_http() { # url, what
    local i
    for i in $(seq 1 200); do
        if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.05
    done
    log "$2 did not come up ($1)"
    exit 1
}

# --- keys and tokens ---------------------------------------------------------
log "minting keys and $POOL tokens"
"$BENCH_TOKENS" --out "$WORK/keys" --count "$POOL" --ttl 3600
TOKEN=$(cat "$WORK/keys/token.txt")
FORGED=$(cat "$WORK/keys/forged.txt")
CONSENT_PATH="/income/17839116535/2025"

# --- nginx: the backend, nginx alone, nginx with auth_request ----------------
nginx_conf() { # name, server block
    mkdir -p "$WORK/$1"
    cat > "$WORK/$1/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/$1/body;
    proxy_temp_path $WORK/$1/proxy;
    fastcgi_temp_path $WORK/$1/fastcgi;
    uwsgi_temp_path $WORK/$1/uwsgi;
    scgi_temp_path $WORK/$1/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
$2
}
CONF
}
start_nginx() { # name -> pid in NGINX_PID
    taskset -c "$PROXY_CPU" nginx -p "$WORK/$1/" -c "$WORK/$1/nginx.conf" -e "$WORK/$1/error.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}

nginx_conf backend "
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location = /jwk { default_type application/json; alias $WORK/keys/jwks.json; }
        location / { default_type text/plain; return 200 \"ok\\n\"; }
    }"
start_nginx backend
wait_http "http://127.0.0.1:$BACKEND_PORT/" "backend nginx"

# Both front nginx keep their connections to the backend alive.
UPSTREAM="upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }"
KEEPALIVE='proxy_http_version 1.1; proxy_set_header Connection "";'
nginx_conf nginx "
    $UPSTREAM
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { $KEEPALIVE proxy_pass http://backend; }
    }"
start_nginx nginx
NGINX_ALONE_PID=$NGINX_PID
wait_http "http://127.0.0.1:$NGINX_PORT/" "nginx alone"

# The shipped snippets, unchanged (their check subrequests use HTTP/1.0,
# a new connection to the gateway each).
mkdir -p "$WORK/nginx-authz"
cp "$ROOT"/deploy/nginx/consent-authz-locations.conf "$ROOT"/deploy/nginx/consent-authz-protect.conf \
    "$WORK/nginx-authz/"
nginx_conf nginx-authz "
    $UPSTREAM
    upstream consent_gateway_authz { server 127.0.0.1:$AUTHZ_PORT; }
    map \"\" \$consent_gateway_authz_secret { default \"\"; }
    server {
        listen 127.0.0.1:$NGINX_AUTHZ_PORT;
        include $WORK/nginx-authz/consent-authz-locations.conf;
        location / {
            include $WORK/nginx-authz/consent-authz-protect.conf;
            $KEEPALIVE
            proxy_pass http://backend;
        }
    }"

# --- consent-gateway: the proxy and the authorization listener --------------
cat > "$WORK/gateway.yaml" <<CONF
server:
  listen: ["127.0.0.1:$GW_PORT"]
  admin_listen: "127.0.0.1:$ADMIN_PORT"
  threads: 1
  authz:
    listen: "127.0.0.1:$AUTHZ_PORT"
    original_request: nginx
issuers:
  - name: bench
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "http://127.0.0.1:$BACKEND_PORT/jwk"
    algorithms: [RS256]
    max_token_lifetime: 2h
upstreams:
  - name: backend
    targets: ["127.0.0.1:$BACKEND_PORT"]
routes:
  - name: income
    path: /income/{fnr}/{year}
    methods: [GET]
    upstream: backend
    auth: consent
    issuers: [bench]
    scopes:
      all: ["demo:inntekt.read"]
    consumers:
      allow: ["0192:310497460"]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
        types: [person]
      metadata:
        required: [inntektsaar]
        match:
          inntektsaar: { path_param: year }
audit:
  enabled: true
  personal_data: masked
CONF
"$GATEWAY" check -c "$WORK/gateway.yaml" >/dev/null
# The audit log (stdout) goes to /dev/null: its write is still paid.
taskset -c "$PROXY_CPU" "$GATEWAY" --log-level warn run -c "$WORK/gateway.yaml" \
    >/dev/null 2>"$WORK/gateway.log" &
GW_PID=$!
PIDS+=($GW_PID)
for _ in $(seq 1 200); do
    curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" && break
    sleep 0.05
done
curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" || { log "gateway not ready"; exit 1; }
start_nginx nginx-authz
NGINX_AUTHZ_PID=$NGINX_PID
for _ in $(seq 1 200); do port_in_use "$NGINX_AUTHZ_PORT" && break; sleep 0.05; done

# Sanity: every target answers 200 to the valid token; the checking ones
# 401 to the forged one.
check_status() { # url token expected
    local got
    got=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "$1")
    [ "$got" = "$3" ] || { log "sanity: $1 answered $got, expected $3"; exit 1; }
}
check_status "http://127.0.0.1:$NGINX_PORT$CONSENT_PATH" "$TOKEN" 200
check_status "http://127.0.0.1:$NGINX_AUTHZ_PORT$CONSENT_PATH" "$TOKEN" 200
check_status "http://127.0.0.1:$NGINX_AUTHZ_PORT$CONSENT_PATH" "$FORGED" 401
check_status "http://127.0.0.1:$GW_PORT$CONSENT_PATH" "$TOKEN" 200
check_status "http://127.0.0.1:$GW_PORT$CONSENT_PATH" "$FORGED" 401

# --- wrk -----------------------------------------------------------------------
cat > "$WORK/tokens.lua" <<'LUA'
-- Cycles through the tokens of $TOKENS_FILE, one per request, starting
-- after the first $TOKENS_START (a run does not replay the last one's).
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do
    tokens[#tokens + 1] = "Bearer " .. line
end
local i = tonumber(os.getenv("TOKENS_START") or "0") % #tokens
request = function()
    i = i + 1
    if i > #tokens then i = 1 end
    wrk.headers["Authorization"] = tokens[i]
    return wrk.format(nil)
end
LUA

cpu_ticks() { # pids: utime + stime in clock ticks, summed
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}
to_ms() { # wrk's latency ("812.00us", "1.20ms", "2.00s") in milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n }'
}
HZ=$(getconf CLK_TCK)
RESULTS=$WORK/results.tsv
: > "$RESULTS"
TOKENS_START=0

run_one() { # scenario target url tokens_file pid...
    local scenario=$1 target=$2 url=$3 tokens=$4
    shift 4
    local out=$WORK/wrk-$scenario-$target.txt before after requests rps p50 p99 non2xx cpu_us
    TOKENS_START=$TOKENS_START TOKENS_FILE=$tokens taskset -c "$WRK_CPU" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$WORK/tokens.lua" "$url" >"$out.warm-up"
    TOKENS_START=$((TOKENS_START + $(awk '/requests in/ { print $1 }' "$out.warm-up") + 100))
    before=$(cpu_ticks "$@")
    TOKENS_START=$TOKENS_START TOKENS_FILE=$tokens taskset -c "$WRK_CPU" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/tokens.lua" "$url" >"$out"
    after=$(cpu_ticks "$@")
    requests=$(awk '/requests in/ { print $1 }' "$out")
    TOKENS_START=$((TOKENS_START + requests + 100))
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$out")
    non2xx=${non2xx:-0}
    cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$rps" "$p50" "$p99" \
        "$cpu_us" "$non2xx" >>"$RESULTS"
    log "  $scenario $target: $rps req/s, p50 ${p50}ms, p99 ${p99}ms, ${cpu_us}us CPU/req, non-2xx $non2xx"
}

for scenario in $SCENARIOS; do
    case $scenario in
        reused) tokens=$WORK/keys/token.txt ;;
        fresh) tokens=$WORK/keys/tokens.txt ;;
        *) log "unknown scenario $scenario"; exit 2 ;;
    esac
    for round in $(seq 1 "$ROUNDS"); do
        log "scenario $scenario, round $round of $ROUNDS"
        run_one "$scenario" nginx "http://127.0.0.1:$NGINX_PORT$CONSENT_PATH" "$tokens" \
            "$NGINX_ALONE_PID"
        run_one "$scenario" nginx-authz "http://127.0.0.1:$NGINX_AUTHZ_PORT$CONSENT_PATH" "$tokens" \
            "$NGINX_AUTHZ_PID" "$GW_PID"
        run_one "$scenario" gw-proxy "http://127.0.0.1:$GW_PORT$CONSENT_PATH" "$tokens" "$GW_PID"
    done
done

# --- the table (each target's median run by req/s) ------------------------
echo
echo "external authorization load comparison: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION on core $WRK_CPU, the targets on core $PROXY_CPU, median of $ROUNDS round(s)"
sort -t"$(printf '\t')" -k1,1 -k2,2 -k3,3g "$RESULTS" | awk -F'\t' -v rounds="$ROUNDS" '
    { key = $1 SUBSEP $2; n[key]++; if (n[key] == int((rounds + 1) / 2)) { row[key] = $0; order[++k] = key } }
    END {
        for (i = 1; i <= k; i++) { split(row[order[i]], f, "\t"); rps[f[1] SUBSEP f[2]] = f[3]; cpu[f[1] SUBSEP f[2]] = f[6] }
        printf "%-8s %-12s %10s %9s %9s %11s %8s %10s %10s\n", "scenario", "target", "req/s", "p50 ms", "p99 ms", "CPU us/req", "non-2xx", "vs nginx", "CPU x"
        for (i = 1; i <= k; i++) {
            split(row[order[i]], f, "\t"); base = f[1] SUBSEP "nginx"
            vr = "-"; vc = "-"
            if (f[2] != "nginx" && rps[base] > 0) { vr = sprintf("%.2f", f[3] / rps[base]); vc = sprintf("%.2f", f[6] / cpu[base]) }
            printf "%-8s %-12s %10.0f %9.3f %9.3f %11s %8s %10s %10s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], vr, vc
        }
    }'
