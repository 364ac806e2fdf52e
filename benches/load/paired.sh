#!/usr/bin/env bash
# Two workloads on ONE gateway process, taking turns (A B B A A B ...), so
# that a machine whose speed drifts over minutes (a VM: successive runs of
# one process under one load have measured 62 to 123 us per request) moves
# both alike. Use
# it where compare.sh's rows of two scenarios (run minutes apart) disagree
# and the question is whether the workloads differ or the machine did.
#
#   benches/load/paired.sh A B      A, B: reused fresh consent1 consent3 consent10
#                                   token-reused token-fresh
#
# Each turn is one wrk run of DURATION on the consent route (audit log on, as
# compare.sh runs it; `token-*`: on compare.sh's `auth: token` route); printed: CPU microseconds per request of the gateway
# (utime + stime over the requests answered), req/s and the verified-token
# cache's hit share per turn, then per workload the median, and the median
# of the per-pair ratios B/A. A pool that one workload's turns use up wraps
# around, and the first 10,000 tokens the gateway verified (those that filled
# its cache) then hit: make POOL and CONSENT_POOL larger than the requests
# of all turns that draw on them (the hit share says when they were not;
# `token-fresh fresh` draws both on POOL: POOL=500000).
# Environment (all optional): PAIRS=6 DURATION=3s CONNECTIONS=50 THREADS=1
# POOL=300000 CONSENT_POOL=300000 SKIP_BUILD CARGO_TARGET_DIR KEEP_WORKDIR
# WRK_CPU=0 PROXY_CPU=1 GATEWAY_SERVER_YAML GATEWAY_AUDIT (as for compare.sh).
# Needs: nginx, wrk, taskset, curl.
set -euo pipefail

A=${1:?usage: paired.sh A B}
B=${2:?usage: paired.sh A B}
PAIRS=${PAIRS:-6}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
POOL=${POOL:-300000}
CONSENT_POOL=${CONSENT_POOL:-300000}
WRK_CPU=${WRK_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}

# shellcheck source=benches/load/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=$(mktemp -d /tmp/consent-gateway-paired.XXXXXX)
PIDS=()
trap cleanup EXIT INT TERM

for w in "$A" "$B"; do
    case $w in reused | fresh | consent1 | consent3 | consent10 | token-reused | token-fresh) ;;
        *) log "unknown workload $w (reused fresh consent1 consent3 consent10 token-reused token-fresh)"; exit 2 ;;
    esac
done
[ "$A" != "$B" ] || { log "A and B must differ"; exit 2; }
need_tools nginx:nginx-light wrk:wrk taskset:util-linux curl:curl
need_two_cores "the gateway"
build_release --bin consent-gateway --example bench_tokens
need_bins "$GATEWAY" "$BENCH_TOKENS"

BACKEND_PORT=$(pick_port) GW_PORT=$(pick_port) ADMIN_PORT=$(pick_port)
FNR=17839116535
YEAR=2025
log "minting $POOL tokens and $CONSENT_POOL consent-workload tokens"
"$BENCH_TOKENS" --out "$WORK/keys" --count "$POOL" --ttl 3600 --consent-count "$CONSENT_POOL"

start_backend nginx "$BACKEND_PORT"
consent_gateway_yaml "$WORK/gateway.yaml" "$GW_PORT" "$ADMIN_PORT" "$BACKEND_PORT" "${GATEWAY_SERVER_YAML:-}" "$TOKEN_ROUTE_YAML"
start_gateway
write_tokens_lua

# Where each pool's next turn starts (past the tokens of the earlier turns, until the pool wraps).
FRESH_START=0
CONSENT_START=0
TURNS=$WORK/turns.tsv
: > "$TURNS"

turn() { # workload
    local w=$1 out=$WORK/wrk-$1.txt tokens url start before after n hits0 miss0 hits
    USES=1 PATH_FMT=""
    case $w in
        reused) tokens=$WORK/keys/token.txt url="/income/$FNR/$YEAR" start=0 ;;
        fresh) tokens=$WORK/keys/tokens.txt url="/income/$FNR/$YEAR" start=$FRESH_START ;;
        token-reused) tokens=$WORK/keys/token.txt url=/codes/x start=0 ;;
        token-fresh) tokens=$WORK/keys/tokens.txt url=/codes/x start=$FRESH_START ;;
        consent*)
            tokens=$WORK/keys/consent-tokens.txt url=/ start=$CONSENT_START
            USES=${w#consent} PATH_FMT="/income/%s/$YEAR"
            ;;
    esac
    hits0=$(cache_counter hit); miss0=$(cache_counter miss)
    before=$(cpu_ticks "$GW_PID")
    wrk_tokens "$start" "$tokens" "$CONNECTIONS" "$DURATION" "$out" "http://127.0.0.1:$GW_PORT$url"
    after=$(cpu_ticks "$GW_PID")
    hits=$(cache_hit_share "$hits0" "$miss0")
    parse_wrk "$out"
    n=$WRK_REQUESTS
    [ "$WRK_NON2XX" = 0 ] || { log "$w: $WRK_NON2XX answers were not 2xx (see $out)"; exit 1; }
    case $w in
        fresh | token-fresh) FRESH_START=$((FRESH_START + n + 100)) ;;
        consent*) CONSENT_START=$((CONSENT_START + n / USES + 100)) ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$w" "$(cpu_us_per_request $((after - before)) "$n")" "$WRK_RPS" "$hits" >>"$TURNS"
    log "  $w: $(cpu_us_per_request $((after - before)) "$n") us CPU/req, $WRK_RPS req/s, cache hits $hits"
}

for p in $(seq 1 "$PAIRS"); do
    log "pair $p of $PAIRS"
    if [ $((p % 2)) = 1 ]; then turn "$A"; turn "$B"; else turn "$B"; turn "$A"; fi
done

# Per workload the median us/req; per pair (turns 2p-1, 2p) the ratio B/A.
echo "consent-gateway paired runs: $A and $B taking turns on one gateway, $PAIRS pairs of wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
awk -F'\t' -v a="$A" -v b="$B" '
    function median(v, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    { printf "turn %2d  %-12s %7.1f us/req %10.0f req/s  cache hits %s\n", NR, $1, $2, $3, $4
      if ($1 == a) { na++; ua[na] = $2 } else { nb++; ub[nb] = $2 }
      pair[int((NR + 1) / 2), $1] = $2 }
    END {
        np = 0
        for (p = 1; p <= NR / 2; p++) if ((p, a) in pair && (p, b) in pair) r[++np] = pair[p, b] / pair[p, a]
        printf "median us/req: %s %.1f, %s %.1f; median of the pair ratios %s/%s: %.2f\n", a, median(ua, na), b, median(ub, nb), b, a, median(r, np)
    }' "$TURNS"
