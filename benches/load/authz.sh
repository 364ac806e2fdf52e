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

# shellcheck source=benches/load/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=$(mktemp -d /tmp/consent-gateway-authz-load.XXXXXX)
PIDS=()
trap cleanup EXIT INT TERM

# --- tools -------------------------------------------------------------------
need_tools nginx:nginx-light wrk:wrk taskset:util-linux curl:curl
need_two_cores "the targets"

# --- build -------------------------------------------------------------------
build_release --bin consent-gateway --example bench_tokens
need_bins "$GATEWAY" "$BENCH_TOKENS"

# --- ports -------------------------------------------------------------------
BACKEND_PORT=$(pick_port) NGINX_PORT=$(pick_port) NGINX_AUTHZ_PORT=$(pick_port)
GW_PORT=$(pick_port) ADMIN_PORT=$(pick_port) AUTHZ_PORT=$(pick_port)

# --- keys and tokens ---------------------------------------------------------
log "minting keys and $POOL tokens"
"$BENCH_TOKENS" --out "$WORK/keys" --count "$POOL" --ttl 3600
TOKEN=$(cat "$WORK/keys/token.txt")
FORGED=$(cat "$WORK/keys/forged.txt")
CONSENT_PATH="/income/17839116535/2025"

# --- nginx: the backend, nginx alone, nginx with auth_request ----------------
start_backend backend "$BACKEND_PORT"

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
consent_gateway_yaml "$WORK/gateway.yaml" "$GW_PORT" "$ADMIN_PORT" "$BACKEND_PORT" "\
  authz:
    listen: \"127.0.0.1:$AUTHZ_PORT\"
    original_request: nginx
"
start_gateway
start_nginx nginx-authz
NGINX_AUTHZ_PID=$NGINX_PID
for _ in $(seq 1 200); do port_in_use "$NGINX_AUTHZ_PORT" && break; sleep 0.05; done

# Sanity: every target answers 200 to the valid token; the checking ones
# 401 to the forged one.
check_status "http://127.0.0.1:$NGINX_PORT$CONSENT_PATH" "$TOKEN" 200
check_status "http://127.0.0.1:$NGINX_AUTHZ_PORT$CONSENT_PATH" "$TOKEN" 200
check_status "http://127.0.0.1:$NGINX_AUTHZ_PORT$CONSENT_PATH" "$FORGED" 401
check_status "http://127.0.0.1:$GW_PORT$CONSENT_PATH" "$TOKEN" 200
check_status "http://127.0.0.1:$GW_PORT$CONSENT_PATH" "$FORGED" 401

# --- wrk -----------------------------------------------------------------------
write_tokens_lua
RESULTS=$WORK/results.tsv
: > "$RESULTS"
TOKENS_START=0

run_one() { # scenario target url tokens_file pid...
    local scenario=$1 target=$2 url=$3 tokens=$4
    shift 4
    local out=$WORK/wrk-$scenario-$target.txt before after cpu_us
    wrk_tokens "$TOKENS_START" "$tokens" "$CONNECTIONS" 2s "$out.warm-up" "$url"
    TOKENS_START=$((TOKENS_START + $(wrk_requests "$out.warm-up") + 100))
    before=$(cpu_ticks "$@")
    wrk_tokens "$TOKENS_START" "$tokens" "$CONNECTIONS" "$DURATION" "$out" "$url" --latency
    after=$(cpu_ticks "$@")
    parse_wrk "$out"
    TOKENS_START=$((TOKENS_START + WRK_REQUESTS + 100))
    cpu_us=$(cpu_us_per_request $((after - before)) "$WRK_REQUESTS")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$WRK_RPS" "$WRK_P50" "$WRK_P99" \
        "$cpu_us" "$WRK_NON2XX" >>"$RESULTS"
    log "  $scenario $target: $WRK_RPS req/s, p50 ${WRK_P50}ms, p99 ${WRK_P99}ms, ${cpu_us}us CPU/req, non-2xx $WRK_NON2XX"
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
