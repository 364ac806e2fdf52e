#!/usr/bin/env bash
# Load comparison, side by side on one Linux machine, loopback only:
#
#   backend      nginx `return 200` (the upstream of every proxy)
#   passthrough  a bare pingora proxy (examples/passthrough.rs)
#   haproxy      HAProxy verifying the same RS256 token with jwt_verify
#                (alg pinned to RS256, iss and exp checked in ACLs)
#   gw-token     consent-gateway, an `auth: token` route
#   gw-consent   consent-gateway, an `auth: consent` route (subject and
#                metadata bound to the path)
#
# Scenarios, each run with identical wrk settings against every target:
#   reused   one valid token on every request (as real clients do)
#   fresh    a pool of distinct valid tokens larger than the gateway's
#            verified-token cache, cycled by a wrk Lua script: a fresh RS256
#            verification on (nearly) every request
#   deny50   every other request carries a forged token (bad signature)
#   latency  the reused token over ONE connection (wrk -c1): no queueing, so
#            p50/p99 are service times and `+p99 ms` is the added latency
#   consent1, consent3, consent10
#            the consent workload: Altinn consent tokens are per data
#            subject, so a consumer checking many persons holds a token per
#            person and uses each a few times. A pool of CONSENT_POOL tokens,
#            one data subject each, each token used k = 1, 3 or 10 times in a
#            row on its own path (/income/<fnr>/2025), audit log on; run
#            against passthrough, haproxy and gw-consent
#   soak     (not in the default list) the `fresh` load on gw-consent alone
#            for SOAK_DURATION (10 minutes), the gateway's resident memory
#            sampled every SOAK_SAMPLE seconds: shows whether memory stays
#            flat under a long run of unique tokens (SPEC section 11)
#
# wrk runs on core 0 (`taskset -c 0`), the backend and the proxies on core 1.
# Prints one table: req/s, p50, p99, CPU microseconds per request of the
# proxy process (from /proc/<pid>/stat utime+stime), the share of non-2xx
# answers, and the gateway's ratios to the pass-through and to HAProxy.
# With ROUNDS > 1 each row is the target's median round (by req/s), and the
# ratios and the added p99 are the median of each round's own (the target
# against the pass-through and HAProxy of the same round), so a drift of
# the machine between rounds moves both sides of every ratio alike.
#
# Usage: benches/load/compare.sh            (from the repository root)
# Environment (all optional):
#   DURATION=10s  CONNECTIONS=50  THREADS=1   wrk settings
#   ROUNDS=1                                  runs per target and scenario, the
#                                             targets taking turns; the table
#                                             shows each one's median run (use
#                                             3 on a shared or noisy machine)
#   POOL=250000                               distinct tokens for `fresh` and
#                                             `soak` (the gateway's cache holds
#                                             10,000)
#   SOAK_DURATION=10m SOAK_SAMPLE=30          the `soak` run, RSS sample period (s)
#   CONSENT_POOL=120000                       tokens (= data subjects) of the
#                                             consent workload
#   SCENARIOS="reused fresh deny50 latency consent1 consent3 consent10"
#                                             which scenarios
#   BASE_PORT=0                               0: pick free ports; else use BASE_PORT..+5
#   TARGETS="passthrough haproxy gw-token gw-consent"
#                                             which targets run (the ratios
#                                             need passthrough and haproxy)
#   GATEWAY_SERVER_YAML=""                    extra lines for the gateway's
#                                             `server:` block, two-space
#                                             indented, e.g. pingora's knobs:
#                                             $'  work_stealing: false\n'
#   GATEWAY_AUDIT=true                        false: the gateway's audit log off
#                                             (to measure what it costs)
#   SKIP_BUILD=1                              use binaries already built
#   WRK_CPU=0 PROXY_CPU=1                     cores
#   KEEP_WORKDIR=1                            keep the temporary directory (configs, logs)
#   CARGO_TARGET_DIR                          where cargo builds (default ./target)
# Needs: nginx, haproxy >= 2.5, wrk, taskset, curl (Debian: nginx-light haproxy
# wrk util-linux curl; installed with apt-get when run as root).
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-1}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
POOL=${POOL:-250000}
SCENARIOS=${SCENARIOS:-"reused fresh deny50 latency consent1 consent3 consent10"}
TARGETS=${TARGETS:-"passthrough haproxy gw-token gw-consent"}
CONSENT_POOL=${CONSENT_POOL:-120000}
BASE_PORT=${BASE_PORT:-0}
WRK_CPU=${WRK_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
SOAK_DURATION=${SOAK_DURATION:-10m}
SOAK_SAMPLE=${SOAK_SAMPLE:-30}

# shellcheck source=benches/load/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=$(mktemp -d /tmp/consent-gateway-load.XXXXXX)
PIDS=()
trap cleanup EXIT INT TERM

# Seconds in a wrk duration (`30s`, `10m`, `1h`, or plain seconds).
duration_s() {
    case $1 in
        *h) echo $((${1%h} * 3600)) ;;
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
# Tokens live an hour; with `soak` two hours (the generated config's
# max_token_lifetime), which bounds the soak to 90 minutes.
TOKEN_TTL=3600
case " $SCENARIOS " in
    *" soak "*)
        TOKEN_TTL=7200
        if [ "$(duration_s "$SOAK_DURATION")" -gt 5400 ]; then
            log "SOAK_DURATION is at most 90m (the tokens live two hours)"
            exit 2
        fi
        ;;
esac

# --- tools -------------------------------------------------------------------
need_tools nginx:nginx-light haproxy:haproxy wrk:wrk taskset:util-linux curl:curl
haproxy_version=$(haproxy -v | sed -n 's/^HAProxy version \([0-9]*\.[0-9]*\).*/\1/p' | head -1)
if [ "$(printf '2.5\n%s\n' "$haproxy_version" | sort -V | head -1)" != 2.5 ]; then
    log "haproxy $haproxy_version has no jwt_verify; need >= 2.5"
    exit 2
fi
need_two_cores "the proxies"

# --- build -------------------------------------------------------------------
build_release --bin consent-gateway --example passthrough --example bench_tokens
need_bins "$GATEWAY" "$PASSTHROUGH" "$BENCH_TOKENS"

# --- ports -------------------------------------------------------------------
if [ "$BASE_PORT" != 0 ]; then
    BACKEND_PORT=$BASE_PORT PASS_PORT=$((BASE_PORT + 1)) HAPROXY_PORT=$((BASE_PORT + 2))
    GW_PORT=$((BASE_PORT + 3)) ADMIN_PORT=$((BASE_PORT + 4))
else
    BACKEND_PORT=$(pick_port) PASS_PORT=$(pick_port) HAPROXY_PORT=$(pick_port)
    GW_PORT=$(pick_port) ADMIN_PORT=$(pick_port)
fi

# --- keys and tokens ---------------------------------------------------------
log "minting keys, $POOL tokens and $CONSENT_POOL consent-workload tokens"
"$BENCH_TOKENS" --out "$WORK/keys" --count "$POOL" --ttl "$TOKEN_TTL" \
    --consent-count "$CONSENT_POOL"
TOKEN=$(cat "$WORK/keys/token.txt")
FORGED=$(cat "$WORK/keys/forged.txt")
{ echo "$TOKEN"; echo "$FORGED"; } > "$WORK/keys/mix.txt"
FNR=17839116535
YEAR=2025

# --- backend: nginx return 200, also serving the JWKS ----------------------
start_backend nginx "$BACKEND_PORT"

# --- bare pingora pass-through ----------------------------------------------
taskset -c "$PROXY_CPU" "$PASSTHROUGH" --listen "127.0.0.1:$PASS_PORT" \
    --upstream "127.0.0.1:$BACKEND_PORT" --threads 1 >"$WORK/passthrough.log" 2>&1 &
PASS_PID=$!
PIDS+=("$PASS_PID")
wait_http "http://127.0.0.1:$PASS_PORT/" passthrough

# --- HAProxy with jwt_verify -----------------------------------------------
cat > "$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
    log stderr format raw local0 err
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    http-request deny deny_status 401 unless { req.hdr(authorization) -m beg -i "bearer " }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
    http-request deny deny_status 401 unless { var(txn.iss) -m str "https://test.maskinporten.no/" }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify("RS256","$WORK/keys/public.pem") -m int 1 }
    http-request deny deny_status 401 unless { var(txn.exp),sub(txn.now) -m int gt 0 }
    default_backend be
backend be
    server backend 127.0.0.1:$BACKEND_PORT
CONF
haproxy -c -q -f "$WORK/haproxy.cfg"
taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_http "http://127.0.0.1:$HAPROXY_PORT/" haproxy

# --- consent-gateway ---------------------------------------------------------
consent_gateway_yaml "$WORK/gateway.yaml" "$GW_PORT" "$ADMIN_PORT" "$BACKEND_PORT" "${GATEWAY_SERVER_YAML:-}" "$TOKEN_ROUTE_YAML"
start_gateway

# Sanity: every target answers 200 to the valid token, the token-checking
# ones 401 to the forged one.
GW_CONSENT_PATH="/income/$FNR/$YEAR"
check_status "http://127.0.0.1:$PASS_PORT/codes/x" "$TOKEN" 200
check_status "http://127.0.0.1:$HAPROXY_PORT/codes/x" "$TOKEN" 200
check_status "http://127.0.0.1:$HAPROXY_PORT/codes/x" "$FORGED" 401
check_status "http://127.0.0.1:$GW_PORT/codes/x" "$TOKEN" 200
check_status "http://127.0.0.1:$GW_PORT/codes/x" "$FORGED" 401
check_status "http://127.0.0.1:$GW_PORT$GW_CONSENT_PATH" "$TOKEN" 200
check_status "http://127.0.0.1:$GW_PORT$GW_CONSENT_PATH" "$FORGED" 401
# The consent workload: a subject's token on its own path, and not on another's.
read -r CONSENT_FNR CONSENT_TOKEN < "$WORK/keys/consent-tokens.txt"
check_status "http://127.0.0.1:$GW_PORT/income/$CONSENT_FNR/$YEAR" "$CONSENT_TOKEN" 200
check_status "http://127.0.0.1:$GW_PORT$GW_CONSENT_PATH" "$CONSENT_TOKEN" 403

# --- wrk -----------------------------------------------------------------------
write_tokens_lua

RESULTS=$WORK/results.tsv
: > "$RESULTS"

# Where in the token file the next run starts: a token the gateway has
# verified in an earlier run must not come back in `fresh` (nor in the
# consent workload, which has its own pool and counter).
TOKENS_START=0
CONSENT_START=0
USES=1
PATH_FMT=""

# The pool a scenario draws from, and where its next run starts.
pool_start() { # scenario
    case $1 in consent*) echo "$CONSENT_START" ;; *) echo "$TOKENS_START" ;; esac
}
pool_advance() { # scenario requests: past the tokens that run used (USES each)
    local n=$(( $2 / USES + 100 ))
    case $1 in
        consent*) CONSENT_START=$((CONSENT_START + n)) ;;
        *) TOKENS_START=$((TOKENS_START + n)) ;;
    esac
}

run_one() { # scenario target pid url tokens_file [connections]
    local scenario=$1 target=$2 pid=$3 url=$4 tokens=$5 conns=${6:-$CONNECTIONS}
    local out before after hits0 miss0
    case " $TARGETS " in *" $target "*) ;; *) return 0 ;; esac
    out=$WORK/wrk-$scenario-$target.txt
    # A short warm-up (connections, caches, JIT of the Lua script).
    wrk_tokens "$(pool_start "$scenario")" "$tokens" "$conns" 2s "$out.warm-up" "$url"
    # Only the gateway remembers tokens; only its runs use up the pool.
    case $target in
        gw-*) pool_advance "$scenario" "$(wrk_requests "$out.warm-up")" ;;
    esac
    if [ "$target" = gw-token ] || [ "$target" = gw-consent ]; then
        hits0=$(cache_counter hit); miss0=$(cache_counter miss)
    fi
    before=$(cpu_ticks "$pid")
    wrk_tokens "$(pool_start "$scenario")" "$tokens" "$conns" "$DURATION" "$out" "$url" --latency
    after=$(cpu_ticks "$pid")
    local hit_share="-"
    if [ -n "${hits0:-}" ]; then
        hit_share=$(cache_hit_share "$hits0" "$miss0")
        hits0=""
    fi
    parse_wrk "$out"
    case $target in gw-*) pool_advance "$scenario" "$WRK_REQUESTS" ;; esac
    local cpu_us deny_share
    cpu_us=$(cpu_us_per_request $((after - before)) "$WRK_REQUESTS")
    deny_share=$(awk -v d="$WRK_NON2XX" -v n="$WRK_REQUESTS" 'BEGIN { printf "%.0f%%", 100 * d / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$WRK_RPS" "$WRK_P50" "$WRK_P99" \
        "$cpu_us" "$deny_share" "$hit_share" "${round:-1}" >>"$RESULTS"
    log "  $scenario $target: $WRK_RPS req/s, p50 ${WRK_P50}ms, p99 ${WRK_P99}ms, ${cpu_us}us CPU/req, non-2xx $deny_share, cache hits $hit_share"
}

# The gateway's resident memory, in kB.
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# `soak`: the `fresh` token pool, cycled, on the consent route for
# SOAK_DURATION while the gateway's RSS is sampled; the summary compares the
# middle and the end of the loaded run (the first samples include the cache
# filling up). Any non-2xx answer, or the gateway exiting, fails the run.
SOAK=$WORK/soak.tsv
run_soak() {
    local out=$WORK/wrk-soak-gw-consent.txt start_s sampler kb hits0 miss0 non2xx requests
    log "scenario soak: gw-consent, $SOAK_DURATION of the $POOL-token pool, RSS every ${SOAK_SAMPLE}s"
    printf '0\t%s\n' "$(rss_kb "$GW_PID")" >"$SOAK"
    hits0=$(cache_counter hit); miss0=$(cache_counter miss)
    start_s=$SECONDS
    # Writes only to $SOAK; its output is closed so that a sleep it leaves
    # behind cannot hold the script's stdout open.
    (
        while sleep "$SOAK_SAMPLE"; do
            kb=$(rss_kb "$GW_PID" 2>/dev/null) && [ -n "$kb" ] || break
            printf '%s\t%s\n' $((SECONDS - start_s)) "$kb" >>"$SOAK"
        done
    ) >/dev/null 2>&1 &
    sampler=$!
    PIDS+=("$sampler")
    wrk_tokens "$TOKENS_START" "$WORK/keys/tokens.txt" "$CONNECTIONS" "$SOAK_DURATION" "$out" \
        "http://127.0.0.1:$GW_PORT$GW_CONSENT_PATH" --latency
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    # A gateway that exited (even one not yet reaped) has no VmRSS.
    kb=$(rss_kb "$GW_PID" 2>/dev/null) || true
    if [ -z "$kb" ]; then
        log "soak: the gateway exited during the run (see $WORK/gateway.log)"
        exit 1
    fi
    printf '%s\t%s\n' $((SECONDS - start_s)) "$kb" >>"$SOAK"
    requests=$(wrk_requests "$out")
    TOKENS_START=$((TOKENS_START + requests + 100))
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { n = $5 } END { print n + 0 }' "$out")
    SOAK_HITS=$(cache_hit_share "$hits0" "$miss0")
    log "  soak gw-consent: $(awk '/^Requests\/sec:/ { print $2 }' "$out") req/s, $requests requests, non-2xx $non2xx, verified-token cache hits $SOAK_HITS"
    if grep -q 'Socket errors' "$out"; then
        log "  soak: wrk reports $(grep 'Socket errors' "$out" | sed 's/^ *//')"
    fi
    if [ "$non2xx" -gt 0 ]; then
        log "soak: $non2xx answers were not 2xx (see $out and $WORK/gateway.log)"
        exit 1
    fi
}

for scenario in $SCENARIOS; do
    conns=$CONNECTIONS
    if [ "$scenario" = soak ]; then
        run_soak
        continue
    fi
    case $scenario in
        reused) tokens=$WORK/keys/token.txt ;;
        fresh) tokens=$WORK/keys/tokens.txt ;;
        deny50) tokens=$WORK/keys/mix.txt ;;
        # One connection, one request at a time: latency is service time,
        # not queueing, so `+p99 ms` is the latency the proxy adds.
        latency) tokens=$WORK/keys/token.txt; conns=1 ;;
        consent1 | consent3 | consent10) tokens=$WORK/keys/consent-tokens.txt ;;
        *) log "unknown scenario $scenario"; exit 2 ;;
    esac
    case $scenario in
        consent*)
            USES=${scenario#consent} PATH_FMT="/income/%s/$YEAR"
            for round in $(seq 1 "$ROUNDS"); do
                log "scenario $scenario (each token used $USES times), round $round of $ROUNDS"
                run_one "$scenario" passthrough "$PASS_PID" "http://127.0.0.1:$PASS_PORT/" "$tokens" "$conns"
                run_one "$scenario" haproxy "$HAPROXY_PID" "http://127.0.0.1:$HAPROXY_PORT/" "$tokens" "$conns"
                run_one "$scenario" gw-consent "$GW_PID" "http://127.0.0.1:$GW_PORT/" "$tokens" "$conns"
            done
            USES=1 PATH_FMT=""
            continue
            ;;
    esac
    for round in $(seq 1 "$ROUNDS"); do
        log "scenario $scenario, round $round of $ROUNDS"
        run_one "$scenario" passthrough "$PASS_PID" "http://127.0.0.1:$PASS_PORT/codes/x" "$tokens" "$conns"
        run_one "$scenario" haproxy "$HAPROXY_PID" "http://127.0.0.1:$HAPROXY_PORT/codes/x" "$tokens" "$conns"
        run_one "$scenario" gw-token "$GW_PID" "http://127.0.0.1:$GW_PORT/codes/x" "$tokens" "$conns"
        run_one "$scenario" gw-consent "$GW_PID" "http://127.0.0.1:$GW_PORT$GW_CONSENT_PATH" "$tokens" "$conns"
    done
done

# Each target's median run (by req/s) per scenario, in the order measured.
MEDIANS=$WORK/medians.tsv
awk -F'\t' '{ print NR "\t" $0 }' "$RESULTS" \
    | sort -t"$(printf '\t')" -k2,2 -k3,3 -k4,4g \
    | awk -F'\t' -v OFS='\t' '
        { key = $2 SUBSEP $3
          if (key != last) { flush(); last = key; n = 0; first = $1 }
          if ($1 + 0 < first + 0) first = $1
          rows[++n] = $0 }
        function flush(  mid, row) {
            if (n == 0) return
            mid = int((n + 1) / 2)
            row = rows[mid]
            sub(/^[0-9]+/, first, row)
            print row
        }
        END { flush() }' \
    | sort -t"$(printf '\t')" -k1,1n | cut -f2- >"$MEDIANS"

GW_PEAK_RSS=$(awk '/^VmHWM/ { printf "%.0f MB", $2 / 1024 }' "/proc/$GW_PID/status")

# --- the table -----------------------------------------------------------------
if [ -s "$MEDIANS" ]; then
    echo
    echo "consent-gateway load comparison: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION on core $WRK_CPU (latency: -c1), backend and proxies on core $PROXY_CPU, median of $ROUNDS round(s)"
    # The ratios and the added p99 are each round's own (a target against
    # the pass-through and HAProxy of the same round), then the median over
    # the rounds: a machine that drifts between rounds moves both sides.
    awk -F'\t' '
        function median(list,   v, n, i, j, t) {
            n = split(substr(list, 2), v, " ")
            if (n == 0) return ""
            for (i = 2; i <= n; i++) { t = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        FNR == NR {
            r = $1 SUBSEP $9
            if ($2 == "passthrough") { pass_rps[r] = $3; pass_p99[r] = $5 }
            if ($2 == "haproxy") ha_rps[r] = $3
            results[FNR] = $0
            next
        }
        FNR == 1 {
            for (i = 1; i in results; i++) {
                split(results[i], f, "\t"); r = f[1] SUBSEP f[9]; key = f[1] SUBSEP f[2]
                if (f[2] ~ /^gw-/ || f[2] == "haproxy") {
                    if (pass_rps[r] > 0) { vs_pass[key] = vs_pass[key] " " f[3] / pass_rps[r]; added[key] = added[key] " " f[5] - pass_p99[r] }
                }
                if (f[2] ~ /^gw-/ && ha_rps[r] > 0) vs_ha[key] = vs_ha[key] " " f[3] / ha_rps[r]
            }
            printf "%-8s %-12s %10s %9s %9s %11s %8s %7s %9s %9s %10s\n",
                "scenario", "target", "req/s", "p50 ms", "p99 ms", "CPU us/req", "non-2xx", "cache", "vs pass", "vs HAProxy", "+p99 ms"
        }
        {
            key = $1 SUBSEP $2; vp = "-"; vh = "-"; dp = "-"
            if (vs_pass[key] != "") { vp = sprintf("%.2f", median(vs_pass[key])); dp = sprintf("%+.3f", median(added[key])) }
            if (vs_ha[key] != "") vh = sprintf("%.2f", median(vs_ha[key]))
            printf "%-8s %-12s %10.0f %9.3f %9.3f %11s %8s %7s %9s %9s %10s\n",
                $1, $2, $3, $4, $5, $6, $7, $8, vp, vh, dp
        }' "$RESULTS" "$MEDIANS"
fi
echo "consent-gateway peak RSS over the whole run: $GW_PEAK_RSS (verified-token cache capped at TOKEN_CACHE_CAPACITY entries, src/gateway.rs)"
if [ -s "$SOAK" ]; then
    echo
    echo "soak: gw-consent for $SOAK_DURATION, the $POOL-token pool cycled ($(awk '/requests in/ { print $1 }' "$WORK/wrk-soak-gw-consent.txt") requests, verified-token cache hits $SOAK_HITS), resident memory:"
    awk -F'\t' '
        { t[NR] = $1; kb[NR] = $2; if (NR > 1 && $2 > max) max = $2 }
        END {
            for (i = 1; i <= NR; i++) printf "  %5ds %7.1f MB%s\n", t[i], kb[i] / 1024, i == 1 ? " (before the load)" : ""
            # Row 1 is the idle gateway; the trend is over the loaded samples.
            if (NR < 4) { print "  too few samples for a trend (make SOAK_SAMPLE smaller)"; exit }
            mid = 1 + int(NR / 2)
            printf "  middle %.1f MB, end %.1f MB, max %.1f MB: %+.1f%% over the second half\n",
                kb[mid] / 1024, kb[NR] / 1024, max / 1024, 100 * (kb[NR] - kb[mid]) / kb[mid]
        }' "$SOAK"
fi
