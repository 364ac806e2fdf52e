#!/usr/bin/env python3
"""Offline checks of consent-gateway's deployment artefacts (run by .ci/deploy-check.sh).

Subcommands:
  metrics ROOT                  dashboard and alert rules use only SPEC section 9 metrics,
                                with their labels and label values; the dashboard covers them all
  dashboard-rules ROOT OUT      write the dashboard's queries as recording rules (for promtool)
  rules-in-sync ROOT            base/prometheusrule.yaml carries exactly deploy/prometheus/alerts.yaml
  sync-rules ROOT               (re)write base/prometheusrule.yaml from alerts.yaml
  manifests RENDERED NAMESPACE  structural and cross-reference checks of a rendered overlay
  extract-config RENDERED DIR   write the data of the gateway ConfigMap into DIR, print the
                                path of its gateway.yaml

Needs PyYAML only. Exit 0 when every check passes, 1 with every problem listed otherwise.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
from typing import Any, Iterable

import yaml

# ---- SPEC section 9: the metric contract ----------------------------------------------

# name -> (type, labels)
SPEC_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "consent_gateway_requests_total": ("counter", ("route", "decision", "reason")),
    "consent_gateway_request_duration_seconds": ("histogram", ("route",)),
    "consent_gateway_decision_duration_seconds": ("histogram", ()),
    "consent_gateway_upstream_responses_total": ("counter", ("route", "class")),
    "consent_gateway_jwks_refresh_total": ("counter", ("issuer", "outcome")),
    "consent_gateway_jwks_keys": ("gauge", ("issuer",)),
    "consent_gateway_jwks_last_success_timestamp_seconds": ("gauge", ("issuer",)),
    "consent_gateway_config_reloads_total": ("counter", ("outcome",)),
    "consent_gateway_config_generation": ("gauge", ()),
    "consent_gateway_token_cache_requests_total": ("counter", ("result",)),
    "consent_gateway_http_errors_total": ("counter", ("kind",)),
    # SPEC section 13: the audit writer's queue.
    "consent_gateway_audit_dropped_total": ("counter", ()),
    "consent_gateway_audit_write_errors_total": ("counter", ()),
    # SPEC section 13: shared state (one-time consents, rate limits).
    "consent_gateway_state_requests_total": ("counter", ("op", "outcome")),
    "consent_gateway_state_request_duration_seconds": ("histogram", ("op",)),
    "consent_gateway_state_up": ("gauge", ()),
    # SPEC section 13: Altinn sync and the authorization endpoints.
    "consent_gateway_altinn_sync_total": ("counter", ("kind", "outcome")),
    "consent_gateway_access_list_members": ("gauge", ("list",)),
    "consent_gateway_altinn_last_success_timestamp_seconds": ("gauge", ("kind",)),
    "consent_gateway_authz_checks_total": ("counter", ("protocol", "decision")),
    # SPEC section 13: OTLP trace export (`tracing.otlp_endpoint`).
    "consent_gateway_trace_spans_dropped_total": ("counter", ("cause",)),
}

# SPEC section 4 reason codes, plus `ok` on allow.
REASONS = {
    "ok", "invalid_request", "headers_too_large", "method_not_allowed", "no_route",
    "missing_token", "malformed_token", "unknown_key", "issuer_not_allowed",
    "algorithm_not_allowed", "keys_unavailable", "bad_signature", "missing_claim",
    "token_expired", "token_not_yet_valid", "token_lifetime_too_long", "audience_mismatch",
    "insufficient_scope", "supplier_not_allowed", "consumer_not_allowed", "consent_missing",
    "consent_recipient_mismatch", "consent_not_yet_valid", "consent_expired",
    "consent_resource_mismatch", "consent_subject_mismatch", "consent_metadata_mismatch",
    "upstream_unavailable", "upstream_timeout",
    # SPEC section 13.
    "consent_already_used", "rate_limited", "state_unavailable",
    "body_too_large", "unsupported_media_type", "access_list_unavailable",
}

LABEL_VALUES: dict[str, set[str]] = {
    "decision": {"allow", "deny", "shadow_deny"},
    "reason": REASONS,
    "kind": REASONS,
    "outcome": {"success", "failure"},
    "class": {"1xx", "2xx", "3xx", "4xx", "5xx", "error"},
    "result": {"hit", "miss"},
}

# Labels Prometheus (or the Prometheus Operator) attaches to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}

# Metrics from elsewhere that the alert rules may use.
EXTERNAL_METRICS: dict[str, tuple[str, ...]] = {
    "up": (),
    "kube_deployment_status_replicas_available": ("deployment",),
    "kube_deployment_spec_replicas": ("deployment",),
}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Problems:
    """Collects every problem, so one run reports them all."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def check(self, ok: bool, where: str, what: str) -> None:
        if not ok:
            self.add(where, what)

    def finish(self, what: str) -> int:
        if self.items:
            print(f"FAIL {what}:")
            for item in self.items:
                print(f"  - {item}")
            return 1
        print(f"ok   {what}")
        return 0


# ---- PromQL scanning ------------------------------------------------------------------

METRIC_TOKEN = re.compile(r"\b((?:consent_gateway|kube)_[a-z0-9_]+|up)\b(?!\s*\()")
SELECTOR = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
PLAIN_ALTERNATIVES = re.compile(r"^[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*$")


def base_metric(token: str) -> tuple[str | None, str]:
    """Maps a series name to its SPEC metric (None when unknown) and its suffix."""
    if token in SPEC_METRICS:
        return token, ""
    for suffix in HISTOGRAM_SUFFIXES:
        if token.endswith(suffix):
            base = token[: -len(suffix)]
            if SPEC_METRICS.get(base, ("",))[0] == "histogram":
                return base, suffix
    return None, ""


def labels_of(token: str) -> set[str] | None:
    base, suffix = base_metric(token)
    if base is not None:
        labels = set(SPEC_METRICS[base][1])
        if suffix == "_bucket":
            labels.add("le")
        return labels
    if token in EXTERNAL_METRICS:
        return set(EXTERNAL_METRICS[token])
    return None


def check_expr(expr: str, where: str, problems: Problems, allow_external: bool) -> set[str]:
    """Checks every metric, label matcher and grouping label of one PromQL expression.

    Returns the SPEC metrics it uses.
    """
    used: set[str] = set()
    tokens = {m.group(1) for m in METRIC_TOKEN.finditer(expr)}
    allowed_labels = set(TARGET_LABELS)
    for token in tokens:
        base, _ = base_metric(token)
        if base is not None:
            used.add(base)
        elif token in EXTERNAL_METRICS and allow_external:
            pass
        else:
            problems.add(where, f"metric `{token}` is not a SPEC section 9 metric")
            continue
        allowed_labels |= labels_of(token) or set()

    for selector in SELECTOR.finditer(expr):
        token, body = selector.group(1), selector.group(2)
        metric_labels = labels_of(token)
        if metric_labels is None:
            continue  # reported above, or a function call such as `vector(`
        for name, op, value in MATCHER.findall(body):
            if name not in metric_labels | TARGET_LABELS:
                problems.add(where, f"`{token}` has no label `{name}`")
                continue
            known = LABEL_VALUES.get(name)
            if known is None or "$" in value or op.startswith("!"):
                continue
            if op == "=":
                values = [value]
            elif PLAIN_ALTERNATIVES.match(value):
                values = value.split("|")
            else:
                continue
            for v in values:
                if v not in known:
                    problems.add(where, f"`{token}{{{name}{op}\"{value}\"}}`: `{v}` is not a value of `{name}`")

    for group in GROUPING.finditer(expr):
        for name in filter(None, (n.strip() for n in group.group(1).split(","))):
            if name not in allowed_labels:
                problems.add(where, f"grouping label `{name}` belongs to none of {sorted(tokens)}")
    return used


def metric_names_in_source(root: pathlib.Path) -> set[str] | None:
    source = root / "src" / "metrics.rs"
    if not source.is_file():
        return None
    return set(re.findall(r'"(consent_gateway_[a-z0-9_]+)"', source.read_text()))


def walk_panels(panels: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def cmd_metrics(root: pathlib.Path) -> int:
    problems = Problems()

    in_source = metric_names_in_source(root)
    if in_source is not None:
        problems.check(in_source == set(SPEC_METRICS), "src/metrics.rs",
                       f"declares {sorted(in_source ^ set(SPEC_METRICS))} differently from SPEC section 9")

    # Dashboard.
    dash_path = root / "deploy" / "grafana" / "consent-gateway.json"
    where = str(dash_path.relative_to(root))
    try:
        dash = json.loads(dash_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        problems.add(where, f"not valid JSON: {err}")
        return problems.finish("dashboard and alert metrics")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds_var = variables.get("datasource", {})
    problems.check(ds_var.get("type") == "datasource" and ds_var.get("query") == "prometheus",
                   where, "needs a templated `datasource` variable of type datasource/prometheus")
    route_var = variables.get("route", {})
    route_query = json.dumps(route_var.get("query", ""))
    problems.check(route_var.get("type") == "query" and "label_values(consent_gateway_" in route_query
                   and ", route)" in route_query, where,
                   "needs a templated `route` variable from label_values(<SPEC metric>, route)")
    problems.check(bool(dash.get("uid")) and bool(dash.get("title")), where, "needs uid and title")

    used: set[str] = set()
    ids: set[int] = set()
    panels = list(walk_panels(dash.get("panels", [])))
    problems.check(len(panels) > 0, where, "has no panels")
    for panel in panels:
        pwhere = f"{where} panel {panel.get('id')} \"{panel.get('title')}\""
        pid = panel.get("id")
        problems.check(isinstance(pid, int) and pid not in ids, pwhere, "panel id missing or duplicated")
        ids.add(pid)
        gp = panel.get("gridPos", {})
        problems.check(all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y"))
                       and gp.get("x", 0) + gp.get("w", 0) <= 24, pwhere, "bad gridPos")
        if panel.get("type") == "row":
            continue
        problems.check(panel.get("datasource", {}).get("uid") == "${datasource}", pwhere,
                       "datasource is not the templated ${datasource}")
        targets = panel.get("targets", [])
        problems.check(len(targets) > 0, pwhere, "has no query")
        for target in targets:
            expr = target.get("expr", "")
            problems.check(bool(expr.strip()), pwhere, "empty expr")
            problems.check(target.get("datasource", {}).get("uid") == "${datasource}", pwhere,
                           "target datasource is not ${datasource}")
            used |= check_expr(expr, pwhere, problems, allow_external=False)
    missing = set(SPEC_METRICS) - used
    problems.check(not missing, where, f"shows no panel for {sorted(missing)}")

    # Alert rules.
    rules_path = root / "deploy" / "prometheus" / "alerts.yaml"
    rwhere = str(rules_path.relative_to(root))
    rules = yaml.safe_load(rules_path.read_text())
    names: set[str] = set()
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            awhere = f"{rwhere} {name}"
            problems.check(name not in names, awhere, "duplicate rule name")
            names.add(name)
            check_expr(str(rule.get("expr", "")), awhere, problems, allow_external=True)
            if "alert" in rule:
                ann = rule.get("annotations", {})
                for key in ("summary", "description", "runbook"):
                    problems.check(bool(str(ann.get(key, "")).strip()), awhere, f"no `{key}` annotation")
                problems.check(rule.get("labels", {}).get("severity") in {"warning", "critical", "info"},
                               awhere, "no severity label (warning|critical|info)")
    return problems.finish(f"dashboard ({len(panels)} panels) and alert rules ({len(names)}) use SPEC metrics only")


def cmd_dashboard_rules(root: pathlib.Path, out: pathlib.Path) -> int:
    """Writes every dashboard query as a recording rule, Grafana variables replaced,
    so that `promtool check rules` parses the PromQL."""
    dash = json.loads((root / "deploy" / "grafana" / "consent-gateway.json").read_text())
    substitutions = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$route": ".*"}
    rules = []
    for panel in walk_panels(dash.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            rules.append({"record": f"dashboard:panel_{panel.get('id')}_{target.get('refId', 'X')}", "expr": expr})
    out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False))
    print(f"{len(rules)} dashboard queries written to {out}")
    return 0


# ---- PrometheusRule wrapper -----------------------------------------------------------

PROMETHEUS_RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by `.ci/deploy-check.sh --sync-rules`:
# edit alerts.yaml, then regenerate. CI fails when the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: consent-gateway
  labels:
    app.kubernetes.io/name: consent-gateway
spec:
"""


def prometheus_rule_text(alerts_text: str) -> str:
    lines = alerts_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = ["  " + line if line.strip() else "" for line in lines[start:]]
    return PROMETHEUS_RULE_HEADER + "\n".join(body) + "\n"


def rule_paths(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    return (root / "deploy" / "prometheus" / "alerts.yaml",
            root / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml")


def cmd_sync_rules(root: pathlib.Path) -> int:
    alerts, wrapper = rule_paths(root)
    wrapper.write_text(prometheus_rule_text(alerts.read_text()))
    print(f"wrote {wrapper.relative_to(root)}")
    return 0


def cmd_rules_in_sync(root: pathlib.Path) -> int:
    problems = Problems()
    alerts, wrapper = rule_paths(root)
    groups = yaml.safe_load(alerts.read_text())["groups"]
    wrapped = yaml.safe_load(wrapper.read_text())
    problems.check(wrapped.get("kind") == "PrometheusRule"
                   and wrapped.get("apiVersion") == "monitoring.coreos.com/v1",
                   str(wrapper.relative_to(root)), "is not a monitoring.coreos.com/v1 PrometheusRule")
    problems.check(wrapped.get("spec", {}).get("groups") == groups, str(wrapper.relative_to(root)),
                   "differs from deploy/prometheus/alerts.yaml: run `.ci/deploy-check.sh --sync-rules`")
    return problems.finish("PrometheusRule wrapper equals alerts.yaml")


# ---- Rendered manifests ---------------------------------------------------------------

CONFIG_DIR = "/etc/consent-gateway"
# Longest drain the gateway takes after SIGTERM (deploy/README.md, "Shutdown and drain").
DRAIN_SECONDS = 25


def load_rendered(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, problems: Problems) -> dict[str, Any]:
    found = by_kind(docs, kind)
    problems.check(len(found) == 1, kind, f"expected exactly one, found {len(found)}")
    return found[0] if found else {}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_of(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def gateway_config_map(docs: list[dict[str, Any]], problems: Problems) -> dict[str, Any]:
    deployment = next(iter(by_kind(docs, "Deployment")), {})
    volumes = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
    names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    maps = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] in names]
    problems.check(len(maps) == 1, "ConfigMap",
                   f"the Deployment mounts ConfigMap(s) {sorted(names)}, rendered: "
                   f"{[c['metadata']['name'] for c in by_kind(docs, 'ConfigMap')]}")
    return maps[0] if maps else {}


def org_number_valid(entry: str) -> bool:
    digits = entry[5:] if entry.startswith("0192:") else entry
    if not re.fullmatch(r"\d{9}", digits):
        return False
    weights = (3, 2, 7, 6, 5, 4, 3, 2)
    remainder = sum(int(d) * w for d, w in zip(digits, weights)) % 11
    check = 0 if remainder == 0 else 11 - remainder
    return check != 10 and check == int(digits[8])


def check_gateway_config(config_map: dict[str, Any], deployment_ports: dict[str, int],
                         problems: Problems) -> dict[str, Any]:
    data = config_map.get("data", {})
    where = "ConfigMap gateway.yaml"
    if "gateway.yaml" not in data:
        problems.add(where, "no gateway.yaml key")
        return {}
    config = yaml.safe_load(data["gateway.yaml"]) or {}
    # SPEC section 3, plus the section 13 additions.
    allowed_top = {"server", "issuers", "upstreams", "routes", "audit", "state", "service", "altinn", "tracing"}
    problems.check(set(config) <= allowed_top, where, f"unknown top-level keys {sorted(set(config) - allowed_top)}")
    server = config.get("server", {})
    listen_ports = {port_of(a)[1] for a in server.get("listen", [])}
    problems.check(deployment_ports.get("http") in listen_ports, where,
                   f"server.listen {server.get('listen')} lacks the container's http port {deployment_ports.get('http')}")
    admin = server.get("admin_listen", "127.0.0.1:9090")
    admin_host, admin_port = port_of(admin)
    problems.check(admin_port == deployment_ports.get("admin"), where,
                   f"admin_listen {admin} is not the container's admin port {deployment_ports.get('admin')}")
    problems.check(admin_host in {"0.0.0.0", "::"}, where,
                   f"admin_listen {admin} is not reachable by probes and Prometheus in a pod (use 0.0.0.0)")

    issuers = {i.get("name") for i in config.get("issuers", [])}
    upstreams = {u.get("name") for u in config.get("upstreams", [])}
    for issuer in config.get("issuers", []):
        problems.check(str(issuer.get("jwks_uri", "")).startswith("https://"), where,
                       f"issuer {issuer.get('name')}: jwks_uri is not https")
    for upstream in config.get("upstreams", []):
        for target in upstream.get("targets", []):
            problems.check(bool(re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", str(target))), where,
                           f"upstream {upstream.get('name')}: target {target!r} is not host:port")
    for i, route in enumerate(config.get("routes", [])):
        rwhere = f"{where} routes[{i}] ({route.get('name')})"
        problems.check(route.get("upstream") in upstreams, rwhere, f"unknown upstream {route.get('upstream')}")
        for issuer in route.get("issuers", []):
            problems.check(issuer in issuers, rwhere, f"unknown issuer {issuer}")
        consumers = route.get("consumers") or {}
        entries = [(f"consumers.allow[{j}]", e) for j, e in enumerate(consumers.get("allow", []))]
        entries += [(f"delegation.suppliers[{j}]", e)
                    for j, e in enumerate((route.get("delegation") or {}).get("suppliers", []))]
        if "file" in consumers:
            name = consumers["file"]
            problems.check("/" not in name and name in data, rwhere,
                           f"access-list file {name!r} is not a key of the same ConfigMap")
            for n, line in enumerate(data.get(name, "").splitlines(), 1):
                entry = line.split("#", 1)[0].strip()
                if entry:
                    entries.append((f"{name}:{n}", entry))
        for field, entry in entries:
            problems.check(org_number_valid(str(entry)), rwhere,
                           f"{field}: {entry!r} is not a valid organisation number (mod 11)")
    return config


def cmd_manifests(rendered: pathlib.Path, namespace: str) -> int:
    problems = Problems()
    docs = load_rendered(rendered)
    kinds = {d.get("kind") for d in docs}
    expected = {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                "ServiceMonitor", "PrometheusRule"}
    problems.check(expected <= kinds, "rendered", f"missing kinds {sorted(expected - kinds)}")
    for doc in docs:
        meta = doc.get("metadata", {})
        if doc.get("kind") != "Namespace":
            problems.check(meta.get("namespace") == namespace, f"{doc.get('kind')}/{meta.get('name')}",
                           f"namespace is {meta.get('namespace')!r}, expected {namespace!r}")

    deployment = one(docs, "Deployment", problems)
    service = one(docs, "Service", problems)
    hpa = one(docs, "HorizontalPodAutoscaler", problems)
    pdb = one(docs, "PodDisruptionBudget", problems)
    policy = one(docs, "NetworkPolicy", problems)
    monitor = one(docs, "ServiceMonitor", problems)
    rule = one(docs, "PrometheusRule", problems)
    if not deployment:
        return problems.finish("rendered manifests")

    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    d = "Deployment"
    problems.check(selects(spec["selector"].get("matchLabels", {}), pod_labels), d,
                   "selector does not match the pod template labels")
    problems.check(pod.get("automountServiceAccountToken") is False, d, "automountServiceAccountToken is not false")

    containers = pod.get("containers", [])
    problems.check(len(containers) == 1, d, "expected one container")
    container = containers[0] if containers else {}
    c = f"{d} container {container.get('name')}"
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    problems.check(ports.get("http") == 8080 and ports.get("admin") == 9090, c,
                   f"ports are {ports}, expected http 8080 and admin 9090")

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        problems.check(get.get("path") == path and get.get("port") in ("admin", 9090), c,
                       f"{probe} must GET {path} on the admin port, is {get}")

    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            problems.check(res in resources.get(kind, {}), c, f"resources.{kind}.{res} missing")

    # Pod Security Standard "restricted", and then some.
    psc, csc = pod.get("securityContext", {}), container.get("securityContext", {})
    problems.check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, c, "runAsNonRoot is not true")
    problems.check(csc.get("runAsUser", psc.get("runAsUser", 1)) != 0, c, "runs as uid 0")
    problems.check(csc.get("allowPrivilegeEscalation") is False, c, "allowPrivilegeEscalation is not false")
    problems.check(csc.get("readOnlyRootFilesystem") is True, c, "readOnlyRootFilesystem is not true")
    problems.check(csc.get("privileged", False) is False, c, "privileged")
    problems.check(csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"),
                   c, "capabilities must drop [ALL] and add none")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    problems.check(seccomp == "RuntimeDefault", c, f"seccompProfile is {seccomp!r}, expected RuntimeDefault")
    problems.check(not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), d,
                   "uses host namespaces")
    for volume in pod.get("volumes", []):
        kinds_used = set(volume) - {"name"}
        problems.check(kinds_used <= {"configMap", "emptyDir", "secret", "projected", "downwardAPI"}, d,
                       f"volume {volume['name']} is of a kind the restricted profile refuses: {kinds_used}")

    # Config mounted as a directory, never subPath; args point into it.
    for mount in container.get("volumeMounts", []):
        problems.check("subPath" not in mount and "subPathExpr" not in mount, c,
                       f"volumeMount {mount['name']} uses subPath: a ConfigMap update would never arrive")
    config_map = gateway_config_map(docs, problems)
    config_volume = next((v["name"] for v in pod.get("volumes", []) if "configMap" in v), None)
    config_mount = next((m for m in container.get("volumeMounts", []) if m["name"] == config_volume), {})
    problems.check(config_mount.get("mountPath") == CONFIG_DIR and config_mount.get("readOnly") is True, c,
                   f"the config ConfigMap must be mounted read-only at {CONFIG_DIR}, is {config_mount}")
    args = container.get("args", [])
    config_arg = args[args.index("-c") + 1] if "-c" in args and args.index("-c") + 1 < len(args) else None
    problems.check(config_arg == f"{CONFIG_DIR}/gateway.yaml" and "run" in args, c,
                   f"args must be run -c {CONFIG_DIR}/gateway.yaml, are {args}")
    check_gateway_config(config_map, ports, problems)

    # Graceful shutdown budget.
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    problems.check(pre_stop > 0, c, "no preStop sleep (load balancers would still send new connections)")
    problems.check(grace >= pre_stop + DRAIN_SECONDS, d,
                   f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain {DRAIN_SECONDS}")

    # Service -> pods, ports.
    s = "Service"
    problems.check(selects(service.get("spec", {}).get("selector", {}), pod_labels), s,
                   "selector does not match the pods")
    service_ports = {p["name"]: p for p in service.get("spec", {}).get("ports", [])}
    for name, number in (("http", 8080), ("admin", 9090)):
        port = service_ports.get(name, {})
        problems.check(port.get("port") == number and port.get("targetPort") in (name, ports.get(name)), s,
                       f"port {name} must be {number} -> container port {name}, is {port}")

    # HPA, PDB.
    h = "HorizontalPodAutoscaler"
    target = hpa.get("spec", {}).get("scaleTargetRef", {})
    problems.check(hpa.get("apiVersion") == "autoscaling/v2", h, "apiVersion is not autoscaling/v2")
    problems.check(target.get("kind") == "Deployment" and target.get("name") == deployment["metadata"]["name"], h,
                   f"scaleTargetRef {target} is not the Deployment")
    cpu = [m for m in hpa.get("spec", {}).get("metrics", [])
           if m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu"]
    problems.check(len(cpu) == 1, h, "no CPU utilisation target")
    min_replicas = hpa.get("spec", {}).get("minReplicas", 1)
    problems.check(min_replicas >= 2, h, "minReplicas < 2: a single replica has no redundancy")
    problems.check("replicas" not in spec, d,
                   f"sets replicas ({spec.get('replicas')}) although the HPA owns the count: every apply would reset it")
    problems.check(selects(pdb.get("spec", {}).get("selector", {}).get("matchLabels", {}), pod_labels),
                   "PodDisruptionBudget", "selector does not match the pods")
    budget = pdb.get("spec", {})
    problems.check(("maxUnavailable" in budget) != ("minAvailable" in budget), "PodDisruptionBudget",
                   "set exactly one of maxUnavailable / minAvailable")

    # NetworkPolicy.
    n = "NetworkPolicy"
    pspec = policy.get("spec", {})
    problems.check(selects(pspec.get("podSelector", {}).get("matchLabels", {}), pod_labels), n,
                   "podSelector does not match the pods")
    problems.check(sorted(pspec.get("policyTypes", [])) == ["Egress", "Ingress"], n,
                   "policyTypes must be Ingress and Egress")

    def rule_ports(rule_: dict[str, Any]) -> set[Any]:
        return {p.get("port") for p in rule_.get("ports", [])}

    admin_rules = [r for r in pspec.get("ingress", []) if rule_ports(r) & {"admin", 9090}]
    http_rules = [r for r in pspec.get("ingress", []) if rule_ports(r) & {"http", 8080}]
    problems.check(len(http_rules) >= 1, n, "no ingress rule for the proxy port")
    problems.check(len(admin_rules) == 1, n, "expected exactly one ingress rule for the admin port")
    for r in admin_rules:
        peers = r.get("from", [])
        problems.check(bool(peers) and all(
            p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
            for p in peers), n, f"the admin port must be open to the monitoring namespace only, is {peers}")
    egress_ports = [(p.get("port"), p.get("protocol", "TCP")) for r in pspec.get("egress", []) for p in r.get("ports", [])]
    problems.check((53, "UDP") in egress_ports and (53, "TCP") in egress_ports, n, "no DNS egress (53/UDP+TCP)")
    problems.check((443, "TCP") in egress_ports, n, "no HTTPS egress (443) for the JWKS")
    config = yaml.safe_load(config_map.get("data", {}).get("gateway.yaml", "")) or {}
    for upstream in config.get("upstreams", []):
        for target_ in upstream.get("targets", []):
            port = port_of(str(target_))[1]
            problems.check((port, "TCP") in egress_ports, n,
                           f"no egress rule for upstream {upstream.get('name')} port {port}")
    state = config.get("state") or {}
    if state.get("backend") == "redis":
        redis = state.get("redis") or {}
        # Standalone `url`, or the sentinels / cluster nodes (README "Sentinel, Cluster and TLS").
        urls = [redis["url"]] if redis.get("url") else []
        urls += list((redis.get("sentinel") or {}).get("urls", []))
        urls += list((redis.get("cluster") or {}).get("urls", []))
        for url in map(str, urls):
            hostport = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
            port = int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 6379
            problems.check((port, "TCP") in egress_ports, n, f"no egress rule for the state Redis port {port}")

    # ServiceMonitor -> Service admin port.
    m = "ServiceMonitor"
    problems.check(selects(monitor.get("spec", {}).get("selector", {}).get("matchLabels", {}),
                           service.get("metadata", {}).get("labels", {})), m, "selector does not match the Service")
    endpoints = monitor.get("spec", {}).get("endpoints", [])
    problems.check(any(e.get("port") == "admin" and e.get("path", "/metrics") == "/metrics" for e in endpoints), m,
                   "no endpoint scraping /metrics on the Service's admin port")
    problems.check(bool(rule.get("spec", {}).get("groups")), "PrometheusRule", "no rule groups")
    return problems.finish(f"rendered manifests ({len(docs)} objects, namespace {namespace})")


def cmd_extract_config(rendered: pathlib.Path, out_dir: pathlib.Path) -> int:
    problems = Problems()
    docs = load_rendered(rendered)
    config_map = gateway_config_map(docs, problems)
    if problems.items:
        return problems.finish("extract the gateway ConfigMap")
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, value in config_map.get("data", {}).items():
        (out_dir / key).write_text(value)
    print(out_dir / "gateway.yaml")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "metrics" and len(args) == 1:
        return cmd_metrics(pathlib.Path(args[0]))
    if cmd == "dashboard-rules" and len(args) == 2:
        return cmd_dashboard_rules(pathlib.Path(args[0]), pathlib.Path(args[1]))
    if cmd == "rules-in-sync" and len(args) == 1:
        return cmd_rules_in_sync(pathlib.Path(args[0]))
    if cmd == "sync-rules" and len(args) == 1:
        return cmd_sync_rules(pathlib.Path(args[0]))
    if cmd == "manifests" and len(args) == 2:
        return cmd_manifests(pathlib.Path(args[0]), args[1])
    if cmd == "extract-config" and len(args) == 2:
        return cmd_extract_config(pathlib.Path(args[0]), pathlib.Path(args[1]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
