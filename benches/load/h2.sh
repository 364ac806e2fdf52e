#!/usr/bin/env bash
# HTTP/2 load comparison (issue 14), side by side on one Linux machine,
# loopback only, h2load (nghttp2) with prior knowledge (h2c):
#
#   backend      nginx `return 200`, HTTP/1.1 (the upstream of both proxies)
#   passthrough  a bare pingora proxy with h2c (examples/passthrough.rs --h2c)
#   gw-token     consent-gateway (server.h2c), an `auth: token` route
#   gw-header    consent-gateway, an `auth: consent` route whose subject is
#                bound to a header (`x-person-id`), GET
#   gw-body      the same consent, subject bound to the body
#                (`json_pointer: /person/fnr`), POST of a 1 KiB JSON document
#   pass-post    the pass-through, the same 1 KiB POST
#
# One token for the whole run (reused, as real clients do). h2load runs on
# core 0, nginx and the proxy on core 1. Prints req/s, the share of 2xx
# answers, and each gateway row's ratio to the pass-through of the same
# request shape.
#
# Usage: benches/load/h2.sh               (from the repository root)
# Environment (all optional):
#   REQUESTS=200000 CLIENTS=10 STREAMS=10   h2load -n, -c, -m (streams per connection)
#   SKIP_BUILD=1                            use binaries already built
#   WRK_CPU=0 PROXY_CPU=1                   cores
#   CARGO_TARGET_DIR                        where cargo builds (default ./target)
# Needs: nginx, h2load, taskset, curl, openssl (Debian: nginx-light
# nghttp2-client util-linux curl openssl; installed with apt-get as root).
set -euo pipefail

# shellcheck source=benches/load/lib.sh
. "$(dirname "$0")/lib.sh"
LOG_PREFIX="h2.sh: "
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-10}
STREAMS=${STREAMS:-10}
WRK_CPU=${WRK_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}

need_tools nginx:nginx-light h2load:nghttp2-client taskset:util-linux openssl:openssl

build_release --bin consent-gateway --example passthrough
need_bins "$GATEWAY" "$PASSTHROUGH"

BACKEND_PORT=$(pick_port) PASS_PORT=$(pick_port) GW_PORT=$(pick_port) ADMIN_PORT=$(pick_port)

WORK=$(mktemp -d)
PIDS=()
trap cleanup EXIT

# --- backend -----------------------------------------------------------------
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location / { return 200 "ok\n"; }
    }
}
CONF
taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=("$!")
wait_http "http://127.0.0.1:$BACKEND_PORT/" nginx

# --- pass-through ------------------------------------------------------------
taskset -c "$PROXY_CPU" "$PASSTHROUGH" --listen "127.0.0.1:$PASS_PORT" \
    --upstream "127.0.0.1:$BACKEND_PORT" --threads 1 --h2c >"$WORK/pass.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$PASS_PORT/" passthrough

# --- key, JWKS, token ----------------------------------------------------------
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
"$GATEWAY" token --key "$WORK/key.pem" --kid bench --print-jwks >"$WORK/jwks.json"
PERSON=17839116535
TOKEN=$("$GATEWAY" token --key "$WORK/key.pem" --kid bench --iss https://bench.example/ \
    --scope bench:read --consumer 0192:310497460 --from "$PERSON" \
    --resource bench-resource --ttl 3600s)

# --- consent-gateway -------------------------------------------------------------
cat > "$WORK/gateway.yaml" <<CONF
server:
  listen: ["127.0.0.1:$GW_PORT"]
  h2c: true
  admin_listen: "127.0.0.1:$ADMIN_PORT"
  threads: 1
issuers:
  - name: bench
    issuer: "https://bench.example/"
    jwks_file: jwks.json
upstreams:
  - name: backend
    targets: ["127.0.0.1:$BACKEND_PORT"]
routes:
  - name: token
    path: /token/{*rest}
    methods: [GET, POST]
    upstream: backend
    auth: token
    issuers: [bench]
    scopes: { all: ["bench:read"] }
  - name: person-get
    path: /person
    methods: [GET]
    upstream: backend
    issuers: [bench]
    consent:
      resources: ["bench-resource"]
      subject: { header: x-person-id }
  - name: person-post
    path: /person
    methods: [POST]
    upstream: backend
    issuers: [bench]
    consent:
      resources: ["bench-resource"]
      subject: { body: { json_pointer: /person/fnr } }
audit:
  enabled: true
  personal_data: masked
CONF
start_gateway

# A 1 KiB JSON document naming the person (padding in another member).
python3 - "$PERSON" >"$WORK/body.json" <<'PY'
import json, sys
doc = {"person": {"fnr": sys.argv[1]}, "query": {"year": 2025}, "pad": ""}
doc["pad"] = "x" * (1024 - len(json.dumps(doc, separators=(",", ":"))))
sys.stdout.write(json.dumps(doc, separators=(",", ":")))
PY

# --- runs ----------------------------------------------------------------------
run() { # name, url, extra h2load args...
    local name=$1 url=$2; shift 2
    # Warm-up, then the measured run.
    taskset -c "$WRK_CPU" h2load -n 2000 -c "$CLIENTS" -m "$STREAMS" "$@" "$url" >/dev/null 2>&1 || true
    local out
    out=$(taskset -c "$WRK_CPU" h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" "$@" "$url" 2>&1)
    local rps ok
    rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
    ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
    printf '%s %s %s\n' "$name" "${rps:-0}" "${ok:-0}"
}

AUTH="authorization: Bearer $TOKEN"
JSON="content-type: application/json"
{
    run passthrough "http://127.0.0.1:$PASS_PORT/token/x" -H "$AUTH"
    run gw-token "http://127.0.0.1:$GW_PORT/token/x" -H "$AUTH"
    run gw-header "http://127.0.0.1:$GW_PORT/person" -H "$AUTH" -H "x-person-id: $PERSON"
    run pass-post "http://127.0.0.1:$PASS_PORT/person" -H "$AUTH" -H "$JSON" -d "$WORK/body.json"
    run gw-body "http://127.0.0.1:$GW_PORT/person" -H "$AUTH" -H "$JSON" -d "$WORK/body.json"
} >"$WORK/results"

awk -v n="$REQUESTS" '
    { rps[$1] = $2; ok[$1] = $3; order[NR] = $1 }
    END {
        printf "%-12s %12s %8s %10s\n", "target", "req/s", "2xx", "ratio"
        base["gw-token"] = "passthrough"; base["gw-header"] = "passthrough"
        base["gw-body"] = "pass-post"
        for (i = 1; i <= NR; i++) {
            t = order[i]
            ratio = (t in base && rps[base[t]] > 0) ? sprintf("%.2f", rps[t] / rps[base[t]]) : "-"
            printf "%-12s %12.0f %7.1f%% %10s\n", t, rps[t], 100 * ok[t] / n, ratio
        }
        if (rps["gw-header"] > 0)
            printf "\nbody-bound POST / header-bound GET on the same token: %.2f\n", rps["gw-body"] / rps["gw-header"]
    }' "$WORK/results"
