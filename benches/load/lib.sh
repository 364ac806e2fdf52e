# shellcheck shell=bash
# Helpers shared by the load scripts (compare.sh, authz.sh, h2.sh,
# paired.sh, instructions.sh); sourced, not run:  . "$(dirname "$0")/lib.sh"
#
# Reads, where a helper needs them: WORK, PIDS (cleanup), PROXY_CPU
# (start_nginx, start_gateway), GATEWAY and ADMIN_PORT (start_gateway),
# WRK_CPU and THREADS (wrk_tokens), SKIP_BUILD (build_release), KEEP_WORKDIR
# (cleanup), LOG_PREFIX (log).

# The repository root and where cargo builds (TARGET: used by the scripts).
# shellcheck disable=SC2034
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# What build_release builds, where the scripts run it from.
GATEWAY=$TARGET/release/consent-gateway
PASSTHROUGH=$TARGET/release/examples/passthrough
BENCH_TOKENS=$TARGET/release/examples/bench_tokens

log() { printf '%s%s\n' "${LOG_PREFIX:-}" "$*" >&2; }

# Stops every process in PIDS and removes WORK (kept, and said so, with
# KEEP_WORKDIR set). For `trap cleanup EXIT ...`.
cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    for pid in "${PIDS[@]:-}"; do
        if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
    done
    if [ -z "${KEEP_WORKDIR:-}" ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}

# Installs the Debian packages of the missing commands when run as root,
# else names them and exits 2. Arguments: command:package ...
need_tools() {
    local spec need_install=()
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null || need_install+=("${spec#*:}")
    done
    [ ${#need_install[@]} -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${need_install[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
    else
        log "missing tools; install the Debian packages: ${need_install[*]}"
        exit 2
    fi
}

need_two_cores() { # what runs on the second core
    if [ "$(nproc)" -lt 2 ]; then
        log "needs at least 2 cores (wrk on one, $1 on another)"
        exit 2
    fi
}

# cargo build --release of the given targets, unless SKIP_BUILD is set.
build_release() { # cargo target arguments...
    if [ -z "${SKIP_BUILD:-}" ]; then
        log "building (release)"
        (cd "$ROOT" && cargo build --release --quiet "$@")
    fi
}

need_bins() { # paths
    local bin
    for bin in "$@"; do
        [ -x "$bin" ] || { log "missing $bin (build it, or unset SKIP_BUILD)"; exit 2; }
    done
}

# --- ports ---------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local p
    while :; do
        p=$(( (RANDOM * 32768 + RANDOM) % 20000 + 30000 ))
        port_in_use "$p" || { echo "$p"; return; }
    done
}

wait_http() { # url, what: any HTTP answer
    local _
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.05
    done
    log "$2 did not come up ($1)"
    exit 1
}

wait_ready() { # url, what: a 2xx answer (the gateway's /readyz)
    local _
    for _ in $(seq 1 200); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.05
    done
    log "$2 not ready"
    exit 1
}

check_status() { # url token expected
    local got
    got=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "$1")
    [ "$got" = "$3" ] || { log "sanity: $1 answered $got, expected $3"; exit 1; }
}

# --- consent-gateway -----------------------------------------------------------
# A gateway.yaml with the consent route `income` (/income/{fnr}/{year}: the
# subject and the year bound to the path) for the issuer `bench`, whose
# JWKS the backend serves at /jwk, and the audit log on (masked).
# Arguments: file gateway-port admin-port backend-port [more server keys
# [more routes]] (YAML lines, each ending in a newline).
consent_gateway_yaml() {
    {
        cat <<CONF
server:
  listen: ["127.0.0.1:$2"]
  admin_listen: "127.0.0.1:$3"
  threads: 1
CONF
        printf '%s' "${5:-}"
        cat <<CONF
issuers:
  - name: bench
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "http://127.0.0.1:$4/jwk"
    algorithms: [RS256]
    max_token_lifetime: 2h
upstreams:
  - name: backend
    targets: ["127.0.0.1:$4"]
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
CONF
        printf '%s' "${6:-}"
        cat <<CONF
audit:
  enabled: ${GATEWAY_AUDIT:-true}
  personal_data: masked
CONF
    } >"$1"
}

# The `auth: token` route `codes` (/codes/...) of the same issuer, for
# consent_gateway_yaml's routes argument.
# shellcheck disable=SC2034
TOKEN_ROUTE_YAML='  - name: codes
    path: /codes/{*rest}
    methods: [GET]
    upstream: backend
    auth: token
    issuers: [bench]
    scopes:
      all: ["demo:inntekt.read"]
    consumers:
      allow: ["0192:310497460"]
'

# Checks $WORK/gateway.yaml, runs $GATEWAY with it on core PROXY_CPU (the
# audit log, stdout, to /dev/null: its write is still paid; stderr to
# $WORK/gateway.log) and waits for its /readyz on ADMIN_PORT. The pid: GW_PID.
start_gateway() {
    "$GATEWAY" check -c "$WORK/gateway.yaml" >/dev/null
    taskset -c "$PROXY_CPU" "$GATEWAY" --log-level warn run -c "$WORK/gateway.yaml" \
        >/dev/null 2>"$WORK/gateway.log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" gateway
}

# --- nginx ---------------------------------------------------------------------
nginx_conf() { # name, server blocks: $WORK/<name>/nginx.conf
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
start_nginx() { # name -> pid in NGINX_PID (and in PIDS), on core PROXY_CPU
    taskset -c "$PROXY_CPU" nginx -p "$WORK/$1/" -c "$WORK/$1/nginx.conf" -e "$WORK/$1/error.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}

# The upstream of every bench: nginx `return 200` on 127.0.0.1:PORT, also
# serving the issuer's key set ($WORK/keys/jwks.json) at /jwk. Started on
# core PROXY_CPU; returns when it answers. Arguments: name port
start_backend() {
    nginx_conf "$1" "
    server {
        listen 127.0.0.1:$2;
        location = /jwk { default_type application/json; alias $WORK/keys/jwks.json; }
        location / { default_type text/plain; return 200 \"ok\\n\"; }
    }"
    start_nginx "$1"
    wait_http "http://127.0.0.1:$2/" "$1"
}

# --- wrk -----------------------------------------------------------------------
# $WORK/tokens.lua: cycles through the tokens of $TOKENS_FILE, starting after
# the first $TOKENS_START (so that one run does not replay the last one's),
# each used $USES times in a row (default 1). A line `<fnr> <token>` (the
# consent workload) also sets the path: $PATH_FMT with %s = fnr.
write_tokens_lua() {
    cat > "$WORK/tokens.lua" <<'LUA'
local tokens, paths = {}, {}
local path_fmt = os.getenv("PATH_FMT")
for line in io.lines(os.getenv("TOKENS_FILE")) do
    local fnr, token = line:match("^(%d+) (.+)$")
    if fnr and path_fmt then
        paths[#tokens + 1] = string.format(path_fmt, fnr)
    else
        token = line
    end
    tokens[#tokens + 1] = "Bearer " .. token
end
local uses = tonumber(os.getenv("USES") or "1")
local i = tonumber(os.getenv("TOKENS_START") or "0") % #tokens
local used = uses
request = function()
    if used >= uses then
        used = 0
        i = i + 1
        if i > #tokens then i = 1 end
    end
    used = used + 1
    wrk.headers["Authorization"] = tokens[i]
    return wrk.format(nil, paths[i])
end
LUA
}

# wrk on core WRK_CPU with $WORK/tokens.lua; USES and PATH_FMT passed on
# when set. Arguments: start tokens_file connections duration out url [wrk args...]
wrk_tokens() {
    local start=$1 tokens=$2 conns=$3 duration=$4 out=$5 url=$6
    shift 6
    local env=(TOKENS_START="$start" TOKENS_FILE="$tokens")
    [ -n "${USES:-}" ] && env+=(USES="$USES")
    [ -n "${PATH_FMT+set}" ] && env+=(PATH_FMT="$PATH_FMT")
    env "${env[@]}" taskset -c "$WRK_CPU" \
        wrk -t"$THREADS" -c"$conns" -d"$duration" "$@" -s "$WORK/tokens.lua" "$url" >"$out"
}

# The gateway's verified-token cache counters (on ADMIN_PORT), and the share
# of hits since two earlier readings.
cache_counter() { # result: hit or miss
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk -v r="$1" '$1 ~ "^consent_gateway_token_cache_requests_total" && $1 ~ "result=\""r"\"" { print $2 }' \
        | head -1
}
cache_hit_share() { # hits misses (the counters before a run): the share of hits since
    local hits1 miss1
    hits1=$(cache_counter hit); miss1=$(cache_counter miss)
    awk -v h=$((${hits1%.*} - ${1%.*})) -v m=$((${miss1%.*} - ${2%.*})) \
        'BEGIN { if (h + m > 0) printf "%.0f%%", 100 * h / (h + m); else print "-" }'
}

# Converts wrk's latency ("812.00us", "1.20ms", "2.00s") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n }'
}

wrk_requests() { awk '/requests in/ { print $1 }' "$1"; } # wrk output file

# A `wrk --latency` output file -> WRK_REQUESTS, WRK_RPS, WRK_P50 and WRK_P99
# (ms), WRK_NON2XX (0 when wrk does not print the line).
# shellcheck disable=SC2034
parse_wrk() {
    WRK_REQUESTS=$(wrk_requests "$1")
    WRK_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$1")
    WRK_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$1")")
    WRK_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$1")")
    WRK_NON2XX=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$1")
    WRK_NON2XX=${WRK_NON2XX:-0}
}

# --- CPU -----------------------------------------------------------------------
HZ=$(getconf CLK_TCK)
cpu_ticks() { # pids: utime + stime in clock ticks, summed
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}
cpu_us_per_request() { # ticks requests: microseconds of CPU per request
    awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'
}
