#!/usr/bin/env bash
# Instructions per request of the whole gateway process (callgrind, every
# thread), a measure that a busy machine does not disturb: start the gateway
# under valgrind with instrumentation off, fill the verified-token cache with
# WARM distinct consent tokens, switch instrumentation on, send N consent
# tokens K times each in a row on one keep-alive connection (the consent
# route, audit on), switch it off and divide. Used for A/B comparisons of two
# builds of the same profile (docs/performance.md, "Fifth round"). It also
# counts the heap allocations per request: the calls into malloc, calloc,
# realloc, the aligned allocators and their mimalloc counterparts (the
# gateway's global allocator) that callgrind recorded in the same
# window.
#
#   benches/load/instructions.sh GATEWAY BENCH_TOKENS K N
#   (GATEWAY_SERVER_YAML and GATEWAY_AUDIT as for compare.sh)
#   e.g. cargo build --release --bin consent-gateway --example bench_tokens
#        benches/load/instructions.sh target/release/consent-gateway \
#            target/release/examples/bench_tokens 3 300
#
# Needs valgrind, nginx, curl and python3 (Debian: valgrind nginx-light).
set -euo pipefail
# shellcheck source=benches/load/lib.sh
. "$(dirname "$0")/lib.sh"
GW=$1; BT=$2; K=$3; N=$4
WARM=${WARM:-11000}   # more than the cache holds (10,000), so it is full
W=$(mktemp -d /tmp/cgab.XXXX)
BP=$(pick_port); GP=$(pick_port); AP=$(pick_port)
"$BT" --out "$W/keys" --count 10 --ttl 7200 --consent-count $((WARM + N)) >/dev/null
mkdir -p $W/nginx
cat > $W/nginx/nginx.conf <<CONF
daemon off; master_process off; worker_processes 1; pid $W/nginx/nginx.pid; error_log $W/nginx/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $W/nginx/b; proxy_temp_path $W/nginx/p; fastcgi_temp_path $W/nginx/f; uwsgi_temp_path $W/nginx/u; scgi_temp_path $W/nginx/s;
 server { listen 127.0.0.1:$BP; location = /jwk { default_type application/json; alias $W/keys/jwks.json; } location / { return 200 "ok\n"; } } }
CONF
nginx -c $W/nginx/nginx.conf -e $W/nginx/error.log & NP=$!
consent_gateway_yaml "$W/gateway.yaml" "$GP" "$AP" "$BP" "${GATEWAY_SERVER_YAML:-}"
# Sends tokens START..START+N of the consent pool, each K times in a row, on
# one keep-alive connection; says on stderr how many were not answered 200.
send_tokens() { # label start n k
python3 - "$W/keys/consent-tokens.txt" $GP "$2" "$3" "$4" "$1" <<'PY'
import sys, http.client
f, port, start, n, k, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
lines = open(f).read().split("\n")[start:start+n]
c = http.client.HTTPConnection("127.0.0.1", port); bad = 0
for l in lines:
    fnr, tok = l.split(" ")
    for _ in range(k):
        c.request("GET", f"/income/{fnr}/2025", headers={"Authorization": "Bearer " + tok}); r = c.getresponse(); r.read()
        bad += r.status != 200
print(label, "bad", bad, file=sys.stderr)
PY
}
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$W/cg.out "$GW" --log-level warn run -c $W/gateway.yaml >/dev/null 2>$W/gw.log & VP=$!
for i in $(seq 1 600); do curl -sf -o /dev/null http://127.0.0.1:$AP/readyz && break; sleep 0.2; done
send_tokens warm 0 $WARM 1
H0=$(curl -s http://127.0.0.1:$AP/metrics | awk '/token_cache_requests_total.*hit/ {print $2}')
callgrind_control -i on $VP >/dev/null
send_tokens measured $WARM $N $K
callgrind_control -i off $VP >/dev/null
H1=$(curl -s http://127.0.0.1:$AP/metrics | awk '/token_cache_requests_total.*hit/ {print $2}')
kill -TERM $VP; wait $VP 2>/dev/null || true
kill $NP 2>/dev/null || true
TOTAL=$(cat $W/cg.out* | awk '/^(summary|totals):/ {if ($2>s) s=$2} END {print s}')
ALLOCS=$(python3 - $W/cg.out* <<'PY'
import re, sys
# Calls into an allocator from outside the allocators, from callgrind's call
# records: `fn=` names the caller, `cfn=` the callee (compressed as
# "(id) name" on first use), and `calls=N ...` follows.
ALLOCATORS = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
              # mimalloc, the gateway's global allocator (the C parts call malloc)
              "mi_malloc", "mi_zalloc", "mi_realloc",
              "mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned"}
count = 0
for path in sys.argv[1:]:
    names, caller, callee = {}, None, None
    for line in open(path, errors="replace"):
        kind = "fn" if line.startswith("fn=") else "cfn" if line.startswith("cfn=") else None
        if kind:
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m:
                name = names.setdefault(m.group(1), m.group(2)) if m.group(2) else names.get(m.group(1))
            else:
                name = line.split("=", 1)[1].strip()
            name = re.sub(r"'\d+$", "", name or "")
            if kind == "fn":
                caller = name
            else:
                callee = name
        elif line.startswith("calls=") and callee in ALLOCATORS and caller not in ALLOCATORS:
            count += int(line[6:].split()[0])
print(count)
PY
)
echo "k=$K requests=$((N*K)) hits=$((H1-H0)) instructions/request=$((TOTAL/(N*K))) allocations/request=$(python3 -c "print(round($ALLOCS/$((N*K)), 1))")"
[ -n "${KEEP:-}" ] && echo "kept $W" || rm -rf $W
