#!/usr/bin/env python3
"""Assertions over the sluice chart's rendered manifests, the image and the
compose file. Run by deploy/helm/check.sh (which installs what this needs);
standalone: `python deploy/helm/test_chart.py [--helm PATH]`.

It renders the chart itself with the real `helm` (the value sets in
deploy/helm/ci/ plus a few variants written here), then checks:
  - every variable of docs/configuration.md's table reaches the container of
    every program that table says uses it, and every value set reaches it intact;
  - the `sluice setup` hook Job runs before the Deployments (hook phases and
    weights, and the Secrets it reads exist by then);
  - probes, ports and terminationGracePeriodSeconds relate correctly;
  - Secrets are referenced by name and never inlined; NATS_URL carries no
    credentials; OTLP headers come from their Secret;
  - completion webhooks (SLUICE_WEBHOOKS) are absent unless webhooks is set,
    then reach the importer and the saver alone, as the file of the named
    Secret, never as a value; the saver gets the importer's and fetcher's
    network guard (SLUICE_DENY_NETWORKS, SLUICE_ALLOW_NETWORKS);
  - each pod's NetworkPolicy lets in only metrics scrapes and lets out only
    DNS, NATS, PostgreSQL (saver, setup), the collector and, for importer and
    fetcher (and the saver when webhooks is set), the internet without
    private, link-local and metadata ranges (evaluated on sample addresses,
    not only read);
  - pods run non-root, read-only, without capabilities;
  - the console (console.enabled, off by default) gets the services'
    hardening and NATS settings but no database, its token only from a
    Secret, a Service on its pages' port, and a NetworkPolicy that lets in
    only networkPolicy.consoleFrom, on that port, and out only DNS, NATS and
    the collector;
  - the custom resources (KEDA ScaledObject, ServiceMonitor) carry the fields
    their CRDs require, pointing at the right stream, consumer and Service;
  - nats-values.yaml, the Dockerfile, deploy/build-command, .dockerignore and
    deploy/compose.yaml agree with the chart, README and Cargo manifests.
Prints one line per failure and ends with `N passed, M failed`.
"""

import argparse
import base64
import copy
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHART = HERE / "sluice"
SERVICES = ("importer", "fetcher", "saver")
COMPONENTS = SERVICES + ("setup",)
# The operator console: optional, off by default; NATS only.
CONSOLE = "console"
WORKLOADS = COMPONENTS + (CONSOLE,)
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
SECRET_ENV = ("DATABASE_URL", "SLUICE_NATS_USER", "SLUICE_NATS_PASSWORD", "SLUICE_NATS_TOKEN", "OTEL_EXPORTER_OTLP_HEADERS",
              "SLUICE_CONSOLE_TOKEN")
# What the chart derives from console.* rather than from a settings map.
CONSOLE_ENV = ("SLUICE_CONSOLE_ADDR", "SLUICE_CONSOLE_TOKEN", "SLUICE_CONSOLE_AUTH_HEADER")
# The download guard, set in downloadConfig; the saver gets it too, for its
# webhook POSTs.
GUARD_ENV = ("SLUICE_DENY_NETWORKS", "SLUICE_ALLOW_NETWORKS")
# Completion webhooks (webhooks.*): the importer checks the names, the saver
# signs and POSTs; the file of the Secret mounted here.
WEBHOOK_USERS = ("importer", "saver")
WEBHOOKS_FILE = "/etc/sluice/webhooks/webhooks.json"
# Addresses importer and fetcher must never reach through their NetworkPolicy
# (unless networkPolicy.fetchFrom opens them): one in each private, loopback,
# link-local (cloud metadata), shared, unique-local and link-local IPv6 range.
PRIVATE_SAMPLES = ("10.1.2.3", "172.16.0.9", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1",
                   "::1", "fd00:ec2::254", "fe80::1")
PUBLIC_SAMPLES = ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
RELEASE, NAMESPACE = "sluice", "sluice"

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
    return ok


# ----------------------------------------------------------------- rendering


class Render:
    def __init__(self, name, docs, values):
        self.name = name
        self.docs = docs
        self.values = values  # chart defaults coalesced with the value set

    def kind(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind, name):
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return found[0] if len(found) == 1 else None

    def workload(self, component):
        """The Deployment (or, for setup, the Job) of a component."""
        kind = "Job" if component == "setup" else "Deployment"
        return self.one(kind, f"{RELEASE}-{component}")

    def container(self, component):
        w = self.workload(component)
        return None if w is None else w["spec"]["template"]["spec"]["containers"][0]

    def env(self, component):
        c = self.container(component)
        return {} if c is None else {e["name"]: e for e in c.get("env", [])}


def coalesce(base, override):
    """Helm's merge of a value set over the chart's values (null deletes)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def helm_template(helm, kube_version, values_files=(), sets=()):
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version]
    for f in values_files:
        cmd += ["-f", str(f)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True)


def render(helm, kube_version, name, values_files=(), sets=(), extra_values=None):
    result = helm_template(helm, kube_version, values_files, sets)
    if not check(f"{name}: helm template succeeds", result.returncode == 0, result.stderr.strip()):
        return None
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for f in values_files:
        values = coalesce(values, yaml.safe_load(Path(f).read_text()))
    if extra_values:
        values = coalesce(values, extra_values)
    return Render(name, docs, values)


def write_values(tmp, name, data):
    path = Path(tmp) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ sources


def readme_variables(path):
    """(name, default, users) for each variable of the Configuration table
    (docs/configuration.md)."""
    text = Path(path).read_text()
    section = re.search(r"^#{1,2} Configuration\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not section:
        return []
    rows = []
    for line in section.group(1).splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) < 3:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(" / ")] if len(names) > 1 else [cells[1]]
        if len(defaults) != len(names):
            defaults = [cells[1]] * len(names)
        users = parse_users(cells[2])
        for name, default in zip(names, defaults):
            rows.append((name, default, users))
    return rows


def parse_users(cell):
    users = set()
    # A note in parentheses ("saver (webhooks)") says why, not who.
    for token in re.split(r",|\band\b", re.sub(r"\s*\([^)]*\)", "", cell.replace("`", ""))):
        token = token.strip().lower()
        if not token:
            continue
        if token in ("all", "everything", "all programs"):
            users |= set(COMPONENTS)
        elif token in ("services", "every service", "all services", "the services"):
            users |= set(SERVICES)
        elif token in SERVICES:
            users.add(token)
        elif token in ("console", "sluice-console", "sluice console", "the console"):
            users.add(CONSOLE)
        elif token in ("sluice setup", "setup", "sluice", "cli", "the cli", "sluice cli"):
            # The chart runs one CLI command: `sluice setup`, the hook.
            users.add("setup")
        elif token.startswith("sluice "):
            pass  # another CLI command (`sluice import`, `sluice status`): not deployed
        else:
            users.add(f"?{token}")
    return users


def default_is_empty(default):
    return default.strip().strip("`").strip().lower() in ("", "empty", "none", "unset", "-")


def duration_seconds(text):
    """Seconds in a humantime duration (20s, 1m30s, 500ms), rounded up."""
    units = {"ms": 0.001, "msec": 0.001, "s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60,
             "h": 3600, "hr": 3600, "hrs": 3600, "d": 86400, "day": 86400, "days": 86400}
    parts = re.findall(r"(\d+)\s*([a-z]+)", text)
    if not parts or re.sub(r"(\d+)\s*([a-z]+)", "", text).strip():
        raise ValueError(f"not a duration: {text!r}")
    total = sum(int(n) * units[u] for n, u in parts)
    return int(-(-total // 1))


def env_text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def stream_of_consumer():
    """consumer name -> base stream name, read from the code's topology."""
    names = (REPO / "shared/messages/src/names.rs").read_text()
    base = dict(re.findall(r"Stream::(\w+)\s*=>\s*\"([A-Z_]+)\"", names))
    consts = {}
    for path in (REPO / "shared").rglob("*.rs"):
        consts.update(re.findall(r"pub const (\w+): &str = \"([a-z-]+)\";", path.read_text()))
    topo = (REPO / "shared/stage/src/nats/topology.rs").read_text()
    out = {}
    for const, stream in re.findall(r"stage::(\w+)\s*=>\s*Some\(Stream::(\w+)\)", topo):
        if const in consts and stream in base:
            out[consts[const]] = base[stream]
    return out


def namespaced_stream(namespace, stream):
    # shared/messages/src/names.rs: `ns` gives `ns_STREAM`, '-' becoming '_'.
    return f"{namespace.replace('-', '_')}_{stream}" if namespace else stream


# --------------------------------------------------------------- the checks


def check_security(r):
    for component in WORKLOADS:
        w = r.workload(component)
        if w is None:
            continue
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        check(f"{r.name}/{component}: pod runs as non-root",
              psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, str(psc))
        check(f"{r.name}/{component}: no service account token mounted",
              pod.get("automountServiceAccountToken") is False)
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            check(f"{r.name}/{component}: read-only root filesystem, no privilege escalation",
                  sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and not sc.get("privileged", False), str(sc))
            check(f"{r.name}/{component}: all capabilities dropped",
                  "ALL" in sc.get("capabilities", {}).get("drop", []) and not sc.get("capabilities", {}).get("add"),
                  str(sc.get("capabilities")))
            check(f"{r.name}/{component}: image is the chart's one image",
                  c["image"].startswith(r.values["image"]["repository"]), c["image"])


def check_probes_and_grace(r, readme):
    defaults = {name: default.strip("`") for name, default, _ in readme}
    for component in SERVICES:
        w = r.workload(component)
        if not check(f"{r.name}/{component}: Deployment rendered", w is not None):
            continue
        pod = w["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = r.env(component)
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        addr = env.get("SLUICE_METRICS_ADDR", {}).get("value", "")
        check(f"{r.name}/{component}: SLUICE_METRICS_ADDR listens on the container port named metrics",
              "metrics" in ports and addr.rsplit(":", 1)[-1] == str(ports["metrics"]) and addr.startswith("0.0.0.0:"),
              f"addr={addr!r} ports={ports}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            p = c.get(probe, {})
            get = p.get("httpGet", {})
            check(f"{r.name}/{component}: {probe} is GET {path} on the metrics port",
                  get.get("path") == path and get.get("port") in ("metrics", ports.get("metrics")), str(p))
        live, ready = c.get("livenessProbe", {}), c.get("readinessProbe", {})
        tolerance = lambda p: p.get("periodSeconds", 10) * p.get("failureThreshold", 3)
        check(f"{r.name}/{component}: liveness tolerates longer than readiness (a NATS outage unreadies, never restarts)",
              tolerance(live) >= tolerance(ready), f"liveness {tolerance(live)}s, readiness {tolerance(ready)}s")
        timeout_text = env.get("SLUICE_SHUTDOWN_TIMEOUT", {}).get("value") or defaults.get("SLUICE_SHUTDOWN_TIMEOUT", "20s")
        try:
            timeout = duration_seconds(timeout_text)
        except ValueError as e:
            check(f"{r.name}/{component}: SLUICE_SHUTDOWN_TIMEOUT parses", False, str(e))
            continue
        grace = pod.get("terminationGracePeriodSeconds", 30)
        check(f"{r.name}/{component}: terminationGracePeriodSeconds ({grace}) > SLUICE_SHUTDOWN_TIMEOUT ({timeout_text})",
              grace > timeout)
        strategy = w["spec"].get("strategy", {}).get("rollingUpdate", {})
        check(f"{r.name}/{component}: rolling update starts a new pod before stopping an old one",
              str(strategy.get("maxUnavailable")) == "0", str(strategy))


def check_hook(r):
    job = r.workload("setup")
    if not check(f"{r.name}: the setup Job is rendered", job is not None):
        return
    ann = job["metadata"].get("annotations", {})
    phases = set(ann.get("helm.sh/hook", "").split(","))
    check(f"{r.name}: setup Job is a pre-install and pre-upgrade hook",
          {"pre-install", "pre-upgrade"} <= phases, str(ann))
    check(f"{r.name}: setup Job hook-delete-policy is before-hook-creation",
          "before-hook-creation" in ann.get("helm.sh/hook-delete-policy", ""), str(ann))
    job_weight = int(ann.get("helm.sh/hook-weight", "0"))
    c = job["spec"]["template"]["spec"]["containers"][0]
    check(f"{r.name}: setup Job runs `sluice setup`",
          c.get("command", [])[:2] == ["/usr/local/bin/sluice", "setup"], str(c.get("command")))
    check(f"{r.name}: setup Job retries and is bounded",
          job["spec"].get("backoffLimit", 0) > 0 and job["spec"].get("activeDeadlineSeconds", 0) > 0
          and job["spec"]["template"]["spec"].get("restartPolicy") in ("OnFailure", "Never"))
    expected_replicas = env_text(r.values["config"]["SLUICE_STREAM_REPLICAS"])
    check(f"{r.name}: setup Job creates streams with SLUICE_STREAM_REPLICAS={expected_replicas}",
          r.env("setup").get("SLUICE_STREAM_REPLICAS", {}).get("value") == expected_replicas,
          str(r.env("setup").get("SLUICE_STREAM_REPLICAS")))
    for d in r.docs:
        if d["kind"] in ("Deployment", "ScaledObject", "HorizontalPodAutoscaler", "Service", "PodDisruptionBudget", "ServiceMonitor"):
            check(f"{r.name}: {d['kind']} {d['metadata']['name']} is applied after the hooks (is no hook itself)",
                  "helm.sh/hook" not in d["metadata"].get("annotations", {}))
    # The streams the services expect are the ones setup creates.
    for component in SERVICES:
        for key in ("SLUICE_NAMESPACE", "SLUICE_STREAM_REPLICAS", "SLUICE_STREAM_MAX_AGE", "SLUICE_DUPLICATE_WINDOW", "NATS_URL"):
            if r.workload(component) is None:
                continue
            a = r.env("setup").get(key, {}).get("value")
            b = r.env(component).get(key, {}).get("value")
            check(f"{r.name}: setup and {component} agree on {key}", a == b, f"setup={a!r} {component}={b!r}")
    # Every Secret the Job reads exists before it: an existing one named in
    # values, or one of the chart's, created by an earlier hook.
    pod = job["spec"]["template"]["spec"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    refs |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    existing = {r.values["database"]["existingSecret"], r.values["nats"]["auth"]["existingSecret"],
                r.values["nats"]["tls"]["existingSecret"],
                (r.values["otel"].get("headers") or {}).get("existingSecret", "")} - {""}
    for name in sorted(refs):
        secret = r.one("Secret", name)
        if secret is None:
            check(f"{r.name}: Secret {name} read by the setup Job is an existing one named in values",
                  name in existing, f"existing: {sorted(existing)}")
            continue
        sann = secret["metadata"].get("annotations", {})
        check(f"{r.name}: Secret {name} is created by a hook before the setup Job",
              {"pre-install", "pre-upgrade"} <= set(sann.get("helm.sh/hook", "").split(","))
              and int(sann.get("helm.sh/hook-weight", "0")) < job_weight, str(sann))


def check_variables(r, readme, expect_all):
    """docs/configuration.md's variables in the containers of their users.

    With expect_all every variable must be there; otherwise those whose
    README default is not empty (the service would run on them)."""
    for name, default, users in readme:
        unknown = [u for u in users if u.startswith("?")]
        if unknown:
            check(f"README: 'used by' of {name} is understood", False, f"unknown: {unknown}")
            continue
        if not expect_all and default_is_empty(default):
            continue
        for component in sorted(users):
            if r.workload(component) is None:
                continue
            check(f"{r.name}: {name} reaches the {component} container", name in r.env(component))


def check_settings_are_values(readme):
    """Every SLUICE_* setting of README is a key of values.yaml, in a map that
    reaches each program that table says uses it. The chart derives the others:
    SLUICE_METRICS_ADDR from metrics.port, SLUICE_NATS_* from nats.auth/tls,
    SLUICE_DOWNLOAD_CREDENTIALS from downloadCredentials and SLUICE_WEBHOOKS
    from webhooks (mounted Secrets), SLUICE_CONSOLE_* from console.*."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, _, users in readme:
        if (not name.startswith("SLUICE_") or name in ("SLUICE_METRICS_ADDR", "SLUICE_DOWNLOAD_CREDENTIALS", "SLUICE_WEBHOOKS")
                or name.startswith("SLUICE_NATS_") or name in CONSOLE_ENV):
            continue
        for component in sorted(u for u in users if not u.startswith("?")):
            maps = [values.get("config") or {}]
            if component in ("importer", "fetcher"):
                maps.append(values.get("downloadConfig") or {})
            if component == "saver":
                maps.append({k: v for k, v in (values.get("downloadConfig") or {}).items() if k in GUARD_ENV})
            if component != "setup":
                maps.append(values.get(component, {}).get("config") or {})
            check(f"values.yaml: {name} is a value reaching {component}", any(name in m for m in maps))


def check_values_reach(r):
    """Each setting in the value set arrives in the env, with its value."""
    v = r.values
    for component in WORKLOADS:
        if r.workload(component) is None:
            continue
        expected = dict(v.get("config") or {})
        if component in ("importer", "fetcher"):
            expected.update(v.get("downloadConfig") or {})
        if component == "saver":
            expected.update({k: x for k, x in (v.get("downloadConfig") or {}).items() if k in GUARD_ENV})
        if component != "setup":
            expected.update(v[component].get("config") or {})
        env = r.env(component)
        for key, value in sorted(expected.items()):
            if value is None or env_text(value) == "":
                check(f"{r.name}: empty {key} is left out of {component}", key not in env)
                continue
            got = env.get(key, {}).get("value")
            check(f"{r.name}: {key}={env_text(value)} reaches {component}", got == env_text(value), f"got {got!r}")
        check(f"{r.name}: NATS_URL reaches {component}", env.get("NATS_URL", {}).get("value") == v["nats"]["url"])
        if component != "setup":
            binary = "sluice-console" if component == CONSOLE else component
            check(f"{r.name}: {component} image command is its binary",
                  r.container(component)["command"] == [f"/usr/local/bin/{binary}"])


def url_userinfo(urls):
    """The URLs among comma-separated ones that carry user:password@ or token@."""
    out = []
    for url in urls.split(","):
        authority = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", url.strip())
        if "@" in re.match(r"[^/?#]*", authority).group(0):
            out.append(url)
    return out


def check_secrets_by_name(r):
    for component in WORKLOADS:
        env = r.env(component)
        if "NATS_URL" in env:
            check(f"{r.name}/{component}: NATS_URL is a plain value without credentials",
                  "value" in env["NATS_URL"] and not url_userinfo(env["NATS_URL"]["value"]), "userinfo in NATS_URL")
        for name in SECRET_ENV:
            if name in env:
                e = env[name]
                check(f"{r.name}/{component}: {name} comes from a Secret by name, never inline",
                      "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), str(e))
        pod = r.workload(component)
        if pod is None:
            continue
        pod = pod["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in r.container(component).get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for name in ("SLUICE_NATS_CREDS", "SLUICE_NATS_NKEY", "SLUICE_NATS_TLS_CA", "SLUICE_NATS_TLS_CERT", "SLUICE_NATS_TLS_KEY",
                     "SLUICE_DOWNLOAD_CREDENTIALS", "SLUICE_WEBHOOKS"):
            if name not in env:
                continue
            path = env[name].get("value", "")
            mount = os.path.dirname(path)
            vol = volumes.get(mounts.get(mount, ""), {})
            item_paths = [i["path"] for i in vol.get("secret", {}).get("items", [])]
            check(f"{r.name}/{component}: {name} names a file of a mounted Secret",
                  "secret" in vol and os.path.basename(path) in item_paths, f"{path} mounts={mounts}")
    check(f"{r.name}: no ConfigMap (settings are env, secrets are Secrets)", not r.kind("ConfigMap"))


def check_selectors(r):
    deployments = {d["metadata"]["name"]: d for d in r.kind("Deployment")}
    for pdb in r.kind("PodDisruptionBudget"):
        target = deployments.get(pdb["metadata"]["name"])
        check(f"{r.name}: PDB {pdb['metadata']['name']} selects its Deployment's pods",
              target is not None and pdb["spec"]["selector"]["matchLabels"].items()
              <= target["spec"]["template"]["metadata"]["labels"].items())
        check(f"{r.name}: PDB {pdb['metadata']['name']} lets a drain proceed one pod at a time",
              pdb["spec"].get("maxUnavailable") == 1, str(pdb["spec"]))
    for svc in r.kind("Service"):
        target = deployments.get(svc["metadata"]["name"])
        # The services' Services expose metrics; the console's, its pages.
        port = "http" if svc["metadata"]["name"] == f"{RELEASE}-{CONSOLE}" else "metrics"
        check(f"{r.name}: Service {svc['metadata']['name']} selects its Deployment's pods on the {port} port",
              target is not None and svc["spec"]["selector"].items() <= target["spec"]["template"]["metadata"]["labels"].items()
              and [p["targetPort"] for p in svc["spec"]["ports"]] == [port])


# ----------------------------------------------------------- network policy


def selector_matches(selector, labels):
    """A LabelSelector against labels; {} matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions") or []:
        has, value, values = e["key"] in labels, labels.get(e["key"]), e.get("values") or []
        if not {"In": has and value in values, "NotIn": not has or value not in values,
                "Exists": has, "DoesNotExist": not has}[e["operator"]]:
            return False
    return True


def peer_matches(peer, end, policy_namespace):
    """A NetworkPolicyPeer against an end: {"ip": ...} outside the cluster,
    or {"namespace": ..., "labels": {...}} for a pod."""
    if "ipBlock" in peer:
        if "ip" not in end:
            return False
        ip, block = ipaddress.ip_address(end["ip"]), peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"])
        excepted = [ipaddress.ip_network(x) for x in block.get("except") or []]
        return ip.version == net.version and ip in net and not any(ip.version == x.version and ip in x for x in excepted)
    if "ip" in end:
        return False
    if "namespaceSelector" in peer:
        ns_ok = selector_matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": end["namespace"]})
    else:
        ns_ok = end["namespace"] == policy_namespace
    return ns_ok and selector_matches(peer.get("podSelector") or {}, end.get("labels", {}))


def rule_allows(rule, peers_key, end, port, protocol, policy_namespace):
    ports = rule.get("ports")
    if ports and not any(p.get("protocol", "TCP") == protocol
                         and ("port" not in p or p["port"] <= port <= p.get("endPort", p["port"])) for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(peer_matches(peer, end, policy_namespace) for peer in peers)


def policies_for(r, component):
    """The NetworkPolicies whose podSelector selects the component's pods."""
    w = r.workload(component)
    if w is None:
        return []
    labels = w["spec"]["template"]["metadata"].get("labels", {})
    return [p for p in r.kind("NetworkPolicy") if selector_matches(p["spec"].get("podSelector", {}), labels)]


def allows(r, component, direction, end, port, protocol="TCP"):
    """Whether the chart's policies let that connection out of (egress) or
    into (ingress) the component's pods. Unselected pods allow everything."""
    kind = "Egress" if direction == "egress" else "Ingress"
    selecting = [p for p in policies_for(r, component) if kind in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    key = "to" if direction == "egress" else "from"
    return any(rule_allows(rule, key, end, port, protocol, NAMESPACE)
               for p in selecting for rule in p["spec"].get(direction) or [])


def ns_pod(namespace, **labels):
    return {"namespace": namespace, "labels": labels}


def url_port(url, default):
    m = re.match(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/]*@)?(\[[^\]]*\]|[^:/]*)(?::(\d+))?", url.strip())
    return int(m.group(2)) if m and m.group(2) else default


def check_network_policies(r):
    """One NetworkPolicy per pod kind, judged by what it lets through."""
    np = r.values.get("networkPolicy")
    policies = r.kind("NetworkPolicy")
    if not check(f"{r.name}: values have networkPolicy", isinstance(np, dict)):
        return
    if not np.get("enabled"):
        check(f"{r.name}: networkPolicy.enabled=false renders no NetworkPolicy", not policies)
        return
    components = [c for c in COMPONENTS if r.workload(c) is not None]
    check(f"{r.name}: a NetworkPolicy per service, for the console when enabled and for the setup Job",
          sorted(p["metadata"]["name"] for p in policies)
          == sorted(f"{RELEASE}-{c}" for c in components + [CONSOLE] * (r.workload(CONSOLE) is not None)),
          str([p["metadata"]["name"] for p in policies]))
    job_weight = int((r.workload("setup") or {"metadata": {}})["metadata"].get("annotations", {}).get("helm.sh/hook-weight", "0"))
    for component in components:
        mine = policies_for(r, component)
        name = f"{RELEASE}-{component}"
        check(f"{r.name}/{component}: exactly its own NetworkPolicy selects its pods",
              [p["metadata"]["name"] for p in mine] == [name], str([p["metadata"]["name"] for p in mine]))
        if not mine:
            continue
        policy = mine[0]
        check(f"{r.name}/{component}: NetworkPolicy isolates both directions",
              {"Ingress", "Egress"} <= set(policy["spec"].get("policyTypes", [])), str(policy["spec"].get("policyTypes")))
        ann = policy["metadata"].get("annotations", {})
        if component == "setup":
            # The Job is a pre-install hook: an ordinary object would not exist yet.
            check(f"{r.name}: the setup Job's NetworkPolicy is a hook created before the Job",
                  {"pre-install", "pre-upgrade"} <= set(ann.get("helm.sh/hook", "").split(","))
                  and int(ann.get("helm.sh/hook-weight", "0")) < job_weight
                  and "before-hook-creation" in ann.get("helm.sh/hook-delete-policy", ""), str(ann))
        else:
            check(f"{r.name}: NetworkPolicy {name} is no hook (lives with its Deployment)", "helm.sh/hook" not in ann)
        for rule in policy["spec"].get("egress") or []:
            check(f"{r.name}/{component}: no egress rule is open to every address on every port",
                  rule.get("to") or rule.get("ports"), str(rule))

        # Ingress: the metrics port, from metricsFrom only.
        metrics = int(r.values["metrics"]["port"])
        ingress = policy["spec"].get("ingress") or []
        if component == "setup" or not np.get("metricsFrom"):
            check(f"{r.name}/{component}: nothing may connect in", not ingress, str(ingress))
        else:
            check(f"{r.name}/{component}: ingress only to the metrics port ({metrics}/TCP), from networkPolicy.metricsFrom",
                  ingress and all(rule.get("ports") == [{"port": metrics, "protocol": "TCP"}]
                                  and rule.get("from") == np["metricsFrom"] for rule in ingress), str(ingress))
            check(f"{r.name}/{component}: another port is closed to the scrapers",
                  not any(allows(r, component, "ingress", ns_pod("monitoring"), port) for port in (metrics + 1, 4222, 8080)))

        # Egress: the rule for each dependency, as configured.
        rules = policy["spec"].get("egress") or []

        def has_rule(ports, to):
            return any(rule.get("ports") == ports and rule.get("to") == (to or None) for rule in rules)

        check(f"{r.name}/{component}: egress to DNS (UDP and TCP 53) at networkPolicy.dns.to",
              has_rule([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}], np["dns"]["to"]), str(rules))
        check(f"{r.name}/{component}: egress to NATS ({np['nats']['port']}/TCP) at networkPolicy.nats.to",
              has_rule([{"port": int(np["nats"]["port"]), "protocol": "TCP"}], np["nats"]["to"]), str(rules))
        needs_db = component == "saver" or (component == "setup" and r.values["setup"]["database"])
        db_rule = has_rule([{"port": int(np["database"]["port"]), "protocol": "TCP"}], np["database"]["to"])
        check(f"{r.name}/{component}: egress to PostgreSQL {'at networkPolicy.database.to' if needs_db else 'closed'}",
              db_rule == needs_db, str(rules))
        endpoint = r.values["otel"]["endpoint"]
        if endpoint:
            port = url_port(endpoint, 443 if endpoint.lower().startswith("https://") else 80)
            check(f"{r.name}/{component}: egress to the OTLP collector ({port}/TCP) at networkPolicy.otel.to",
                  has_rule([{"port": port, "protocol": "TCP"}], np["otel"]["to"]), str(rules))

        downloads = component in ("importer", "fetcher")
        webhooks = component == "saver" and bool((r.values.get("webhooks") or {}).get("existingSecret"))
        internet = (downloads or webhooks) and np["internet"]["enabled"]
        # Ports a rule opens to every address (an empty `to`) are left out.
        anywhere = {p.get("port") for rule in rules if not rule.get("to") for p in rule.get("ports") or []}
        ports = [port for port in (80, 443, 21, 8080, 8443) if port not in anywhere]
        for ip in PUBLIC_SAMPLES:
            check(f"{r.name}/{component}: the internet ({ip}) is {'open on any port' if internet else 'closed'}",
                  all(allows(r, component, "egress", {"ip": ip}, port) == internet for port in ports), str(ports))
        for ip in PRIVATE_SAMPLES:
            opened = (any(peer_matches(peer, {"ip": ip}, NAMESPACE) for peer in np.get("fetchFrom") or []) and downloads
                      or any(peer_matches(peer, {"ip": ip}, NAMESPACE) for peer in np.get("webhooksTo") or []) and webhooks)
            if not opened:
                check(f"{r.name}/{component}: {ip} (private, loopback, link-local or metadata) is closed",
                      not any(allows(r, component, "egress", {"ip": ip}, port) for port in ports), str(ports))
        for peer in np.get("fetchFrom") or []:
            check(f"{r.name}/{component}: networkPolicy.fetchFrom peer {'open' if downloads else 'closed'} on any port",
                  any(rule.get("to") == np["fetchFrom"] and not rule.get("ports") for rule in rules) == downloads, str(peer))
        for peer in np.get("webhooksTo") or []:
            check(f"{r.name}/{component}: networkPolicy.webhooksTo peer {'open' if webhooks else 'closed'} on any port",
                  any(rule.get("to") == np["webhooksTo"] and not rule.get("ports") for rule in rules) == webhooks, str(peer))
        if downloads:
            check(f"{r.name}/{component}: PostgreSQL's pods are closed to it",
                  not allows(r, component, "egress", ns_pod(NAMESPACE, **{"app.kubernetes.io/name": "postgresql"}),
                             int(np["database"]["port"])))


def check_custom_resources(r, consumers):
    """KEDA and Prometheus-operator objects: the fields their CRDs require."""
    deployments = {d["metadata"]["name"]: d for d in r.kind("Deployment")}
    services = {s["metadata"]["name"]: s for s in r.kind("Service")}
    for so in r.kind("ScaledObject"):
        name = so["metadata"]["name"]
        component = name.removeprefix(f"{RELEASE}-")
        spec = so.get("spec", {})
        check(f"{r.name}: ScaledObject {name} is keda.sh/v1alpha1", so.get("apiVersion") == "keda.sh/v1alpha1")
        target = spec.get("scaleTargetRef", {}).get("name")
        check(f"{r.name}: ScaledObject {name} scaleTargetRef.name is its Deployment", target in deployments, str(target))
        if target in deployments:
            check(f"{r.name}: Deployment {target} leaves replicas to KEDA", "replicas" not in deployments[target]["spec"])
        check(f"{r.name}: ScaledObject {name} min <= max replicas",
              0 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100))
        triggers = spec.get("triggers") or []
        if not check(f"{r.name}: ScaledObject {name} has one nats-jetstream trigger",
                     len(triggers) == 1 and triggers[0].get("type") == "nats-jetstream", str(triggers)):
            continue
        meta = triggers[0].get("metadata", {})
        required = ("natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold")
        check(f"{r.name}: ScaledObject {name} trigger has {', '.join(required)}",
              all(meta.get(k) not in (None, "") for k in required), str(meta))
        check(f"{r.name}: ScaledObject {name} trigger metadata are strings",
              all(isinstance(v, str) for v in meta.values()), str(meta))
        namespace = r.env(component).get("SLUICE_NAMESPACE", {}).get("value", "")
        check(f"{r.name}: ScaledObject {name} reads consumer {component} on its input stream",
              meta.get("consumer") == component and component in consumers
              and meta.get("stream") == namespaced_stream(namespace, consumers[component]),
              f"stream={meta.get('stream')} consumer={meta.get('consumer')} code={consumers.get(component)}")
        check(f"{r.name}: ScaledObject {name} reads the NATS monitoring port through the headless Service",
              re.fullmatch(r"[a-z0-9-]+-headless(\.[a-z0-9-]+)*:\d+", meta.get("natsServerMonitoringEndpoint", "")) is not None,
              meta.get("natsServerMonitoringEndpoint"))
    for sm in r.kind("ServiceMonitor"):
        name = sm["metadata"]["name"]
        spec = sm.get("spec", {})
        check(f"{r.name}: ServiceMonitor {name} is monitoring.coreos.com/v1", sm.get("apiVersion") == "monitoring.coreos.com/v1")
        labels = spec.get("selector", {}).get("matchLabels", {})
        matched = [s for s in services.values() if labels and labels.items() <= s["metadata"]["labels"].items()]
        check(f"{r.name}: ServiceMonitor {name} selector matches exactly one metrics Service", len(matched) == 1, str(labels))
        endpoints = spec.get("endpoints") or []
        check(f"{r.name}: ServiceMonitor {name} scrapes /metrics on the port named metrics",
              endpoints and all(e.get("port") == "metrics" and e.get("path") == "/metrics" for e in endpoints), str(endpoints))
    for hpa in r.kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        check(f"{r.name}: HPA {hpa['metadata']['name']} targets its Deployment, which leaves replicas to it",
              target in deployments and "replicas" not in deployments[target]["spec"])
        container = deployments.get(target, {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
        check(f"{r.name}: HPA {hpa['metadata']['name']} measures CPU against a CPU request",
              "cpu" in container.get("resources", {}).get("requests", {}))


def check_otel_headers(r):
    """OTEL_EXPORTER_OTLP_HEADERS from otel.headers' Secret, in every container, or nowhere."""
    headers = r.values["otel"].get("headers") or {}
    for component in WORKLOADS:
        if r.workload(component) is None:
            continue
        env = r.env(component).get("OTEL_EXPORTER_OTLP_HEADERS")
        if headers.get("existingSecret"):
            ref = (env or {}).get("valueFrom", {}).get("secretKeyRef", {})
            want = {"name": headers["existingSecret"], "key": headers.get("existingSecretKey") or "OTEL_EXPORTER_OTLP_HEADERS"}
            check(f"{r.name}/{component}: OTEL_EXPORTER_OTLP_HEADERS from Secret {want['name']}, key {want['key']}",
                  env is not None and "value" not in env and ref == want, str(env))
        else:
            check(f"{r.name}/{component}: no OTEL_EXPORTER_OTLP_HEADERS without otel.headers.existingSecret", env is None)


def check_webhooks(r):
    """SLUICE_WEBHOOKS: nowhere without webhooks.existingSecret; with it, in
    the importer and the saver alone, as the file of that Secret (its key),
    never the JSON as a value. The saver guards its POSTs with the network
    guard the importer and the fetcher download through."""
    webhooks = r.values.get("webhooks") or {}
    secret = webhooks.get("existingSecret")
    for component in WORKLOADS:
        w = r.workload(component)
        if w is None:
            continue
        env = r.env(component).get("SLUICE_WEBHOOKS")
        pod = w["spec"]["template"]["spec"]
        volumes = [v for v in pod.get("volumes", []) if v.get("name") == "webhooks"
                   or (secret and v.get("secret", {}).get("secretName") == secret)]
        if secret and component in WEBHOOK_USERS:
            check(f"{r.name}/{component}: SLUICE_WEBHOOKS is the file {WEBHOOKS_FILE}, never the JSON as a value",
                  env == {"name": "SLUICE_WEBHOOKS", "value": WEBHOOKS_FILE}, str(env))
            check(f"{r.name}/{component}: the webhooks file is key {webhooks.get('existingSecretKey')} of Secret {secret}, mounted read-only",
                  [v.get("secret") for v in volumes]
                  == [{"secretName": secret, "defaultMode": 0o440,
                       "items": [{"key": webhooks.get("existingSecretKey"), "path": os.path.basename(WEBHOOKS_FILE)}]}]
                  and any(m["name"] == "webhooks" and m["mountPath"] == os.path.dirname(WEBHOOKS_FILE) and m.get("readOnly")
                          for m in r.container(component).get("volumeMounts", [])), str(volumes))
        else:
            why = "not one of its users" if secret else "no webhooks"
            check(f"{r.name}/{component}: {why}, no SLUICE_WEBHOOKS and no webhooks volume", env is None and not volumes,
                  f"{env} {volumes}")
    if secret:
        check(f"{r.name}: the webhooks Secret {secret} is referenced, never created by the chart", r.one("Secret", secret) is None)
    saver, guard = r.env("saver"), {}
    if r.workload("saver") is not None:
        own = r.values["saver"].get("config") or {}
        for key in GUARD_ENV:
            value = own.get(key, (r.values.get("downloadConfig") or {}).get(key))
            got = saver.get(key, {}).get("value")
            want = None if value is None or env_text(value) == "" else env_text(value)
            check(f"{r.name}/saver: {key} is downloadConfig's (the webhook POSTs' guard)", got == want, f"got {got!r}")
            guard[key] = got
        for peer in ("importer", "fetcher"):
            if r.workload(peer) is not None and not any(key in own for key in GUARD_ENV):
                check(f"{r.name}/saver: the {peer}'s network guard, as it is",
                      all(r.env(peer).get(key, {}).get("value") == guard[key] for key in GUARD_ENV),
                      str({key: r.env(peer).get(key) for key in GUARD_ENV}))


def check_console(r):
    """The operator console: absent unless console.enabled; when enabled, a
    Deployment hardened like the services', on NATS alone, its token from a
    Secret, a Service on its pages and a NetworkPolicy letting in only
    networkPolicy.consoleFrom on that port, and out only DNS, NATS (and the
    collector)."""
    v = r.values
    console = v.get("console") or {}
    name = f"{RELEASE}-{CONSOLE}"
    ours = [d for d in r.docs if d["metadata"]["name"] == name]
    if not console.get("enabled"):
        check(f"{r.name}: console off, so no console object", not ours, str([d["kind"] for d in ours]))
        return
    w = r.workload(CONSOLE)
    if not check(f"{r.name}: console Deployment rendered", w is not None):
        return
    pod = w["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = r.env(CONSOLE)
    check(f"{r.name}/console: runs /usr/local/bin/sluice-console", c.get("command") == ["/usr/local/bin/sluice-console"],
          str(c.get("command")))

    # Hardening: exactly what the services' pods and containers get.
    peer = next((s for s in SERVICES if r.workload(s) is not None), None)
    if peer:
        ppod = r.workload(peer)["spec"]["template"]["spec"]
        pc = ppod["containers"][0]
        for key in ("securityContext", "automountServiceAccountToken", "serviceAccountName", "imagePullSecrets",
                    "priorityClassName"):
            check(f"{r.name}/console: pod {key} as the {peer}'s", pod.get(key) == ppod.get(key), f"{pod.get(key)} vs {ppod.get(key)}")
        for key in ("securityContext", "image", "imagePullPolicy"):
            check(f"{r.name}/console: container {key} as the {peer}'s", c.get(key) == pc.get(key), f"{c.get(key)} vs {pc.get(key)}")
    check(f"{r.name}/console: seccomp RuntimeDefault, non-root, read-only root, no capabilities",
          pod.get("securityContext", {}).get("seccompProfile", {}).get("type") == "RuntimeDefault"
          and pod["securityContext"].get("runAsNonRoot") is True
          and c.get("securityContext", {}).get("readOnlyRootFilesystem") is True
          and c["securityContext"].get("capabilities", {}).get("drop") == ["ALL"])

    # NATS only: the services' NATS env and mounts, never the database.
    check(f"{r.name}/console: no DATABASE_URL", "DATABASE_URL" not in env)
    database_secret = v["database"]["existingSecret"] or f"{RELEASE}-database"
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    refs |= {vol["secret"]["secretName"] for vol in pod.get("volumes", []) if "secret" in vol}
    check(f"{r.name}/console: reads no database Secret", database_secret not in refs, str(sorted(refs)))
    if peer:
        penv = r.env(peer)
        nats_env = [k for k in penv if k == "NATS_URL" or k.startswith("SLUICE_NATS_") or k == "SLUICE_NAMESPACE"]
        check(f"{r.name}/console: the {peer}'s NATS settings, as they are ({', '.join(sorted(nats_env))})",
              all(env.get(k) == penv[k] for k in nats_env)
              and not any(k.startswith("SLUICE_NATS_") and k not in penv for k in env),
              str({k: env.get(k) for k in nats_env}))
        pmounts = {m["name"]: m for m in pc.get("volumeMounts", []) if m["name"].startswith("nats-")}
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        pvols = {vol["name"]: vol for vol in ppod.get("volumes", []) if vol["name"].startswith("nats-")}
        vols = {vol["name"]: vol for vol in pod.get("volumes", [])}
        check(f"{r.name}/console: the {peer}'s NATS credential and TLS mounts ({', '.join(sorted(pmounts)) or 'none'}), nothing else",
              mounts == pmounts and vols == pvols, f"{sorted(mounts)} {sorted(vols)}")

    # Ports and probes.
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    port = int(console["service"]["port"])
    check(f"{r.name}/console: container ports http ({port}) and metrics", ports == {"http": port, "metrics": int(v["metrics"]["port"])},
          str(ports))
    check(f"{r.name}/console: SLUICE_CONSOLE_ADDR listens on 0.0.0.0 at the http port",
          env.get("SLUICE_CONSOLE_ADDR", {}).get("value") == f"0.0.0.0:{port}", str(env.get("SLUICE_CONSOLE_ADDR")))
    check(f"{r.name}/console: SLUICE_METRICS_ADDR at the metrics port",
          env.get("SLUICE_METRICS_ADDR", {}).get("value") == f"0.0.0.0:{v['metrics']['port']}")
    for probe, want in (("startupProbe", "http"), ("readinessProbe", "http"), ("livenessProbe", "metrics")):
        get = c.get(probe, {}).get("httpGet", {})
        check(f"{r.name}/console: {probe} is GET /healthz on {want} (never /readyz: it binds no consumer)",
              get.get("path") == "/healthz" and get.get("port") in (want, ports.get(want)), str(c.get(probe)))

    # Who may act: the token from a Secret only, the proxy's header as given.
    token = console.get("token") or {}
    e = env.get("SLUICE_CONSOLE_TOKEN")
    if token.get("existingSecret") or token.get("value"):
        want = ({"name": token["existingSecret"], "key": token.get("existingSecretKey")} if token.get("existingSecret")
                else {"name": name, "key": "SLUICE_CONSOLE_TOKEN"})
        check(f"{r.name}/console: SLUICE_CONSOLE_TOKEN from Secret {want['name']}, key {want['key']}, never a value",
              e is not None and "value" not in e and e.get("valueFrom", {}).get("secretKeyRef") == want, str(e))
        secret = r.one("Secret", want["name"])
        if token.get("existingSecret"):
            check(f"{r.name}/console: the existing token Secret is referenced, not created", secret is None)
        elif check(f"{r.name}/console: the chart creates the token Secret", secret is not None):
            check(f"{r.name}/console: its Secret holds console.token.value",
                  secret["data"].get("SLUICE_CONSOLE_TOKEN") == base64.b64encode(token["value"].encode()).decode())
            text = "".join(yaml.safe_dump(d) for d in r.docs if d is not secret)
            check(f"{r.name}/console: the token is in no other object",
                  token["value"] not in text and base64.b64encode(token["value"].encode()).decode() not in text)
    else:
        check(f"{r.name}/console: no token, no SLUICE_CONSOLE_TOKEN (read-only)", e is None, str(e))
        check(f"{r.name}/console: no token, no token Secret", r.one("Secret", name) is None)
    header = console.get("authHeader") or ""
    got = env.get("SLUICE_CONSOLE_AUTH_HEADER")
    check(f"{r.name}/console: SLUICE_CONSOLE_AUTH_HEADER {'is ' + header if header else 'unset'}",
          (got or {}).get("value") == header if header else got is None, str(got))

    # Its Service: the pages' port, to the container port named http.
    svc = r.one("Service", name)
    if check(f"{r.name}/console: a Service", svc is not None):
        check(f"{r.name}/console: Service {console['service']['type']} on port {port}, to the container's http port, nothing else",
              svc["spec"].get("type") == console["service"]["type"]
              and [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("http", port, "http")],
              str(svc["spec"]))
        selected = [d["metadata"]["name"] for d in r.kind("Deployment")
                    if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        check(f"{r.name}/console: its Service selects the console's pods alone", selected == [name], str(selected))

    # Its NetworkPolicy.
    np = v["networkPolicy"]
    if not np.get("enabled"):
        return
    mine = policies_for(r, CONSOLE)
    if not check(f"{r.name}/console: exactly its own NetworkPolicy selects its pods",
                 [x["metadata"]["name"] for x in mine] == [name], str([x["metadata"]["name"] for x in mine])):
        return
    policy = mine[0]
    check(f"{r.name}/console: NetworkPolicy isolates both directions and is no hook",
          {"Ingress", "Egress"} <= set(policy["spec"].get("policyTypes", []))
          and "helm.sh/hook" not in policy["metadata"].get("annotations", {}))
    ingress = policy["spec"].get("ingress") or []
    allowed = np.get("consoleFrom") or []
    if allowed:
        check(f"{r.name}/console: ingress only to its http port ({port}/TCP), from networkPolicy.consoleFrom",
              ingress and all(rule.get("ports") == [{"port": port, "protocol": "TCP"}] and rule.get("from") == allowed
                              for rule in ingress), str(ingress))
    else:
        check(f"{r.name}/console: empty networkPolicy.consoleFrom, nothing may connect in", not ingress, str(ingress))
    # Every peer that scrapes the services, or may open the pages, stays off
    # the console's other ports.
    for end in (ns_pod("monitoring", **{"app.kubernetes.io/name": "prometheus"}), ns_pod(NAMESPACE)):
        check(f"{r.name}/console: {end} reaches no port but the pages'",
              not any(allows(r, CONSOLE, "ingress", end, other) for other in (int(v["metrics"]["port"]), 4222, port + 1)))
    rules = policy["spec"].get("egress") or []
    wanted = [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}], "to": np["dns"]["to"] or None},
              {"ports": [{"port": int(np["nats"]["port"]), "protocol": "TCP"}], "to": np["nats"]["to"] or None}]
    endpoint = v["otel"]["endpoint"]
    if endpoint:
        otel = url_port(endpoint, 443 if endpoint.lower().startswith("https://") else 80)
        wanted.append({"ports": [{"port": otel, "protocol": "TCP"}], "to": np["otel"]["to"] or None})
    got_rules = [{"ports": rule.get("ports"), "to": rule.get("to")} for rule in rules]
    check(f"{r.name}/console: egress to DNS, NATS{' and the collector' if endpoint else ''}, nothing else",
          got_rules == wanted, str(got_rules))
    # Ports a rule opens to every address (an empty `to`) are left out.
    anywhere = {p.get("port") for rule in rules if not rule.get("to") for p in rule.get("ports") or []}
    closed = [p for p in (80, 443, 5432, 8080) if p not in anywhere]
    check(f"{r.name}/console: PostgreSQL and the internet are closed to it",
          not any(allows(r, CONSOLE, "egress", {"ip": ip}, p) for ip in PUBLIC_SAMPLES + PRIVATE_SAMPLES for p in closed)
          and not allows(r, CONSOLE, "egress", ns_pod(NAMESPACE, **{"app.kubernetes.io/name": "postgresql"}),
                         int(np["database"]["port"])))


def check_kube_validate(r, kube_version):
    import kubernetes_validate

    for d in r.docs:
        if d["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(d, kube_version, strict=True)
            ok, detail = True, ""
        except Exception as e:  # ValidationError, SchemaNotFoundError, ...
            ok, detail = False, f"{type(e).__name__}: {e}"
        check(f"{r.name}: {d['kind']} {d['metadata']['name']} validates strictly against Kubernetes {kube_version}", ok, detail)


# ------------------------------------------------------- files beside the chart


def check_nats_values(r_default):
    nv = yaml.safe_load((HERE / "nats-values.yaml").read_text())
    cfg = nv.get("config", {})
    check("nats-values: cluster enabled with 3 replicas",
          cfg.get("cluster", {}).get("enabled") is True and cfg.get("cluster", {}).get("replicas") == 3)
    check("nats-values: enough servers for the chart's stream replicas",
          cfg.get("cluster", {}).get("replicas", 1) >= int(r_default.values["config"]["SLUICE_STREAM_REPLICAS"]))
    js = cfg.get("jetstream", {})
    check("nats-values: JetStream on file storage on a PVC with a size",
          js.get("enabled") is True and js.get("fileStore", {}).get("enabled", True) is True
          and js.get("fileStore", {}).get("pvc", {}).get("enabled", True) is True
          and re.fullmatch(r"\d+[KMGT]i", str(js.get("fileStore", {}).get("pvc", {}).get("size", ""))) is not None)
    monitor = cfg.get("monitor", {})
    endpoint = r_default.values["autoscaling"]["keda"]["natsServerMonitoringEndpoint"]
    check("nats-values: monitoring port on, and the one KEDA is pointed at",
          monitor.get("enabled") is True and endpoint.endswith(f":{monitor.get('port')}"), f"{monitor} vs {endpoint}")
    # Release `nats` in namespace `nats`: Services `nats` and `nats-headless`.
    check("chart defaults: NATS_URL is the client Service of release nats in namespace nats",
          r_default.values["nats"]["url"] == "nats://nats.nats.svc.cluster.local:4222")
    check("chart defaults: KEDA reads the headless Service of release nats in namespace nats",
          endpoint.startswith("nats-headless.nats.svc.cluster.local:"))
    # The default NetworkPolicy lets the pods reach where the default URLs point.
    url = r_default.values["nats"]["url"]
    host = re.match(r"^[a-z]+://([^:/]+)", url).group(1)
    np = r_default.values.get("networkPolicy")
    if not check("chart defaults: values.yaml has networkPolicy", isinstance(np, dict)):
        return
    check("chart defaults: networkPolicy.nats.port is nats.url's port", url_port(url, 4222) == np["nats"]["port"])
    check("chart defaults: the NetworkPolicy lets every pod reach the NATS pods nats.url names",
          all(allows(r_default, c, "egress", ns_pod(host.split(".")[1], **{"app.kubernetes.io/name": "nats"}), np["nats"]["port"])
              for c in COMPONENTS))
    db = r_default.values["database"]["url"]
    db_host = re.match(r"^[a-z]+://(?:[^@/]*@)?([^:/]+)", db).group(1)
    check("chart defaults: networkPolicy.database.port is database.url's port", url_port(db, 5432) == np["database"]["port"])
    check("chart defaults: the saver and setup reach the pods behind database.url's Service (`postgresql`, release namespace)",
          all(allows(r_default, c, "egress", ns_pod(NAMESPACE, **{"app.kubernetes.io/name": db_host}), np["database"]["port"])
              for c in ("saver", "setup")))
    check("chart defaults: Prometheus in namespace monitoring may scrape every service, on the metrics port",
          all(allows(r_default, c, "ingress", ns_pod("monitoring", **{"app.kubernetes.io/name": "prometheus"}),
                     r_default.values["metrics"]["port"]) for c in SERVICES))
    check("chart defaults: CoreDNS in kube-system answers every pod (UDP and TCP 53)",
          all(allows(r_default, c, "egress", ns_pod("kube-system", **{"k8s-app": "kube-dns"}), 53, proto)
              for c in COMPONENTS for proto in ("UDP", "TCP")))


def check_chart_meta():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    check("Chart.yaml: appVersion is the workspace version",
          chart.get("appVersion") == cargo["workspace"]["package"]["version"], f"{chart.get('appVersion')}")
    check("Chart.yaml: no dependencies (NATS is its own release; renders offline)", not chart.get("dependencies"))


def binaries():
    """package name -> bin names, for every Cargo.toml under services/, cli/ and console/."""
    out = {}
    for manifest in sorted(list((REPO / "services").glob("*/Cargo.toml")) + [REPO / "cli/Cargo.toml", REPO / "console/Cargo.toml"]):
        data = tomllib.loads(manifest.read_text())
        out[data["package"]["name"]] = [b["name"] for b in data.get("bin", [])] or [data["package"]["name"]]
    return out


def dockerfile_stages(text):
    text = re.sub(r"\\\n", " ", text)
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append({"from": rest.strip(), "lines": []})
        elif stages:
            stages[-1]["lines"].append((word.upper(), rest.strip()))
    return stages


def check_image():
    command = (REPO / "deploy/build-command").read_text()
    lines = [l for l in command.splitlines() if l.strip()]
    check("deploy/build-command is one line", len(lines) == 1)
    command = lines[0].strip() if lines else ""
    bins = binaries()
    packages = re.findall(r"-p\s+(\S+)", command)
    check("build-command: cargo build --release --locked", command.startswith("cargo build --release --locked "))
    wanted = {"importer", "fetcher", "saver", "sluice", "sluice-console"}
    built = {b for p in packages for b in bins.get(p, [])}
    check("build-command: its packages exist and build exactly importer, fetcher, saver, sluice, sluice-console",
          all(p in bins for p in packages) and built == wanted, f"packages={packages} bins={bins}")

    text = (REPO / "Dockerfile").read_text()
    stages = dockerfile_stages(text)
    runs = [(i, rest) for i, s in enumerate(stages) for w, rest in s["lines"] if w == "RUN"]
    check("Dockerfile: a build stage runs exactly deploy/build-command", any(rest == command for _, rest in runs),
          "no `RUN " + command + "`")
    check("Dockerfile: its header comment quotes deploy/build-command", f"#   {command}" in text)
    if not check("Dockerfile: multi-stage", len(stages) >= 2):
        return
    builder = next((s for s in stages if any(w == "RUN" and rest == command for w, rest in s["lines"])), None)
    if builder:
        words = [(w, rest) for w, rest in builder["lines"]]
        cook = next((i for i, (w, rest) in enumerate(words) if w == "RUN" and "cargo chef cook" in rest), None)
        copy_all = next((i for i, (w, rest) in enumerate(words) if w == "COPY" and rest.split()[:1] == ["."]), None)
        build = next(i for i, (w, rest) in enumerate(words) if w == "RUN" and rest == command)
        check("Dockerfile: dependencies are built in their own cached layer before the source is copied",
              cook is not None and copy_all is not None and cook < copy_all < build)
        if cook is not None:
            cook_packages = re.findall(r"-p\s+(\S+)", words[cook][1])
            check("Dockerfile: the dependency layer cooks the same packages, --release --locked",
                  cook_packages == packages and "--release" in words[cook][1] and "--locked" in words[cook][1])
    final = stages[-1]
    check("Dockerfile: runtime is distroless (no shell) and non-root",
          final["from"].startswith("gcr.io/distroless/") and ":nonroot" in final["from"], final["from"])
    users = [rest for w, rest in final["lines"] if w == "USER"]
    check("Dockerfile: runtime USER is non-root", users and users[-1].split(":")[0] not in ("0", "root"), str(users))
    check("Dockerfile: runtime stage runs nothing (needs no shell)", not any(w == "RUN" for w, _ in final["lines"]))
    cmd = [rest for w, rest in final["lines"] if w in ("CMD", "ENTRYPOINT")]
    check("Dockerfile: CMD/ENTRYPOINT in exec form", all(c.startswith("[") for c in cmd), str(cmd))
    labels = " ".join(rest for w, rest in final["lines"] if w == "LABEL")
    for label in ("title", "description", "version", "revision", "licenses"):
        check(f"Dockerfile: OCI label org.opencontainers.image.{label}", f"org.opencontainers.image.{label}=" in labels)
    copied = " ".join(rest for w, rest in final["lines"] if w == "COPY")
    for b in sorted(wanted):
        check(f"Dockerfile: runtime image holds /usr/local/bin/{b}",
              f"/target/release/{b} " in copied + " " and copied.rstrip().endswith("/usr/local/bin/"))
    rust = re.search(r"ARG RUST_VERSION=(\d+)\.(\d+)", text)
    need = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"].get("rust-version", "1.0")
    check("Dockerfile: RUST_VERSION meets the workspace rust-version",
          rust is not None and (int(rust.group(1)), int(rust.group(2))) >= tuple(int(x) for x in need.split(".")[:2]))

    ignore = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    check(".dockerignore: leaves out target/ and .git", "target" in ignore and ".git" in ignore)
    members = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    kept = all(not any(m == i or m.startswith(i.rstrip("/") + "/") for i in ignore) for m in members + ["Cargo.lock", "Cargo.toml"])
    check(".dockerignore: keeps every workspace member, Cargo.toml and Cargo.lock", kept, str(ignore))


def check_compose(readme):
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text())
    services = compose.get("services", {})
    for name in ("nats", "postgres", "jaeger", "setup") + SERVICES:
        check(f"compose: service {name}", name in services)
    if not all(n in services for n in ("nats", "setup") + SERVICES):
        return
    nats_cmd = " ".join(services["nats"].get("command", []))
    check("compose: NATS runs with JetStream and its monitoring port",
          ("--jetstream" in nats_cmd or "-js" in nats_cmd.split()) and "8222" in nats_cmd)
    check("compose: Jaeger all-in-one", "jaeger" in services.get("jaeger", {}).get("image", ""))
    check("compose: setup waits for healthy NATS and PostgreSQL",
          all(services["setup"].get("depends_on", {}).get(s, {}).get("condition") == "service_healthy" for s in ("nats", "postgres")))
    check("compose: setup runs `sluice setup`", services["setup"].get("command") == ["sluice", "setup"])
    for name in ("setup",) + SERVICES:
        s = services[name]
        build = s.get("build", {})
        check(f"compose: {name} is built from the repository's Dockerfile",
              (REPO / "deploy" / build.get("context", "")).resolve() == REPO and build.get("dockerfile") == "Dockerfile")
        check(f"compose: {name} runs non-root and read-only like the chart",
              str(s.get("user", "0")).split(":")[0] not in ("0", "root") and s.get("read_only") is True and "ALL" in s.get("cap_drop", []))
        if name in SERVICES:
            check(f"compose: {name} starts after setup completed",
                  s.get("depends_on", {}).get("setup", {}).get("condition") == "service_completed_successfully")
            check(f"compose: {name} runs its binary", s.get("command") == [name])
            check(f"compose: {name} has time to drain",
                  duration_seconds(s.get("stop_grace_period", "10s")) > duration_seconds(s["environment"].get("SLUICE_SHUTDOWN_TIMEOUT", "20s")))
        env = s.get("environment", {})
        for var, _, users in readme:
            if name in users and not var.startswith("SLUICE_NATS_"):
                # NATS credentials and TLS: the local stack runs without them.
                check(f"compose: {var} is set for {name}, as in the chart", var in env)
        check(f"compose: {name} traces to Jaeger", env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").startswith("http://jaeger:"))

    # The console: the image's sluice-console, NATS only, read-only, its pages on 8080.
    s = services.get(CONSOLE)
    if not check("compose: service console", s is not None):
        return
    env = s.get("environment", {})
    build = s.get("build", {})
    check("compose: console is built from the repository's Dockerfile",
          (REPO / "deploy" / build.get("context", "")).resolve() == REPO and build.get("dockerfile") == "Dockerfile")
    check("compose: console runs non-root and read-only like the chart",
          str(s.get("user", "0")).split(":")[0] not in ("0", "root") and s.get("read_only") is True and "ALL" in s.get("cap_drop", []))
    check("compose: console runs sluice-console", s.get("command") == ["sluice-console"], str(s.get("command")))
    check("compose: console starts after setup completed",
          s.get("depends_on", {}).get("setup", {}).get("condition") == "service_completed_successfully")
    check("compose: console talks to NATS, never to PostgreSQL",
          env.get("NATS_URL") == services["importer"]["environment"].get("NATS_URL")
          and env.get("SLUICE_NAMESPACE") == services["importer"]["environment"].get("SLUICE_NAMESPACE")
          and "DATABASE_URL" not in env and "postgres" not in (s.get("depends_on") or {}))
    check("compose: console is read-only (no token, no proxy header)",
          not env.get("SLUICE_CONSOLE_TOKEN") and not env.get("SLUICE_CONSOLE_AUTH_HEADER"))
    check("compose: console listens on 0.0.0.0:8080, published on 127.0.0.1 only",
          env.get("SLUICE_CONSOLE_ADDR") == "0.0.0.0:8080"
          and s.get("ports") and all(str(p).startswith("127.0.0.1:") and str(p).endswith(":8080") for p in s["ports"]),
          str(s.get("ports")))
    for var, _, users in readme:
        if CONSOLE in users and not var.startswith("SLUICE_NATS_") and var not in CONSOLE_ENV:
            check(f"compose: {var} is set for console, as in the chart", var in env)
    check("compose: console traces to Jaeger", env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").startswith("http://jaeger:"))


# -------------------------------------------------------------------- main


def negative_cases(helm, kube_version, tmp):
    """Settings the chart must refuse, each with the message it must give."""
    cases = [
        ("KEDA and HPA on one service", {"saver": {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}}},
         "at most one of autoscaling.keda and autoscaling.hpa"),
        ("a grace period not above SLUICE_SHUTDOWN_TIMEOUT", {"fetcher": {"terminationGracePeriodSeconds": 20}},
         "must exceed its SLUICE_SHUTDOWN_TIMEOUT"),
        ("DATABASE_URL among the settings", {"config": {"DATABASE_URL": "postgres://u:p@h/db"}}, "DATABASE_URL is database.*"),
        ("a NATS password among the settings", {"config": {"SLUICE_NATS_PASSWORD": "secret"}}, "is set by the chart"),
        ("a secret as a plain extraEnv value", {"extraEnv": [{"name": "DATABASE_URL", "value": "postgres://u:p@h/db"}]},
         "never as a plain value"),
        ("a duration sluice cannot read", {"config": {"SLUICE_SHUTDOWN_TIMEOUT": "20"}}, "is not a duration"),
        ("an HPA without a CPU request", {"importer": {"resources": {"requests": None}, "autoscaling": {"hpa": {"enabled": True}}}},
         "needs importer.resources.requests.cpu"),
        ("TLS without certificates", {"nats": {"tls": {"enabled": True, "existingSecretKeys": {"ca": "", "cert": "", "key": ""}}}},
         "nats.tls.enabled"),
        ("a NATS user without a password", {"nats": {"auth": {"user": "sluice"}}}, "a user needs a password"),
        ("a misspelt value (values.schema.json)", {"importer": {"replica": 3}}, "additional properties 'replica' not allowed"),
        ("a misspelt console value (values.schema.json)", {"console": {"enabled": True, "tokn": {}}},
         "additional properties 'tokn' not allowed"),
        ("a console token shorter than 16 characters", {"console": {"enabled": True, "token": {"value": "SENTINEL-short"}}},
         "console.token.value is too short"),
        ("the console token among the settings", {"config": {"SLUICE_CONSOLE_TOKEN": "SENTINEL-in-config-000"}},
         "is set by the chart"),
        ("the console token as a plain value in its extraEnv",
         {"console": {"enabled": True, "extraEnv": [{"name": "SLUICE_CONSOLE_TOKEN", "value": "SENTINEL-in-extra-env-0"}]}},
         "extraEnv SLUICE_CONSOLE_TOKEN: secrets come from Secrets"),
        ("an existing console token Secret without its key",
         {"console": {"enabled": True, "token": {"existingSecret": "console", "existingSecretKey": ""}}},
         "console.token.existingSecretKey"),
        ("the console's pages on the metrics port", {"console": {"enabled": True, "service": {"port": 9090}}},
         "must differ from metrics.port"),
        ("a console auth header that is no header name", {"console": {"enabled": True, "authHeader": "X User"}},
         "does not match pattern"),
        ("a ServiceMonitor without the metrics Service",
         {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, "needs metrics.service.enabled"),
        ("a user and password in nats.url", {"nats": {"url": "nats://sluice:SENTINEL-pw@nats.nats.svc:4222"}},
         "nats.url: no user, password or token in the URL"),
        ("a token in the second of several NATS URLs",
         {"nats": {"url": "nats://nats-0.nats.svc:4222, tls://SENTINEL-token@nats-1.nats.svc:4222"}},
         "nats.url: no user, password or token in the URL"),
        ("credentials in a NATS URL without a scheme", {"nats": {"url": "sluice:SENTINEL-pw@nats:4222"}},
         "nats.url: no user, password or token in the URL"),
        ("NATS_URL as a plain extraEnv value", {"extraEnv": [{"name": "NATS_URL", "value": "nats://u:SENTINEL@n:4222"}]},
         "extraEnv NATS_URL: secrets come from Secrets"),
        ("OTLP headers as a plain extraEnv value",
         {"extraEnv": [{"name": "OTEL_EXPORTER_OTLP_HEADERS", "value": "x-api-key=SENTINEL"}]},
         "extraEnv OTEL_EXPORTER_OTLP_HEADERS: secrets come from Secrets"),
        ("OTLP trace headers as a plain extraEnv value",
         {"extraEnv": [{"name": "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "value": "x-api-key=SENTINEL"}]},
         "extraEnv OTEL_EXPORTER_OTLP_TRACES_HEADERS: secrets come from Secrets"),
        ("a *_PASSWORD as a plain extraEnv value", {"extraEnv": [{"name": "SMTP_PASSWORD", "value": "SENTINEL"}]},
         "extraEnv SMTP_PASSWORD: secrets come from Secrets"),
        ("a *_TOKEN as a plain value in one service's extraEnv",
         {"importer": {"extraEnv": [{"name": "GITHUB_TOKEN", "value": "SENTINEL"}]}}, "extraEnv GITHUB_TOKEN: secrets come from Secrets"),
        ("a *_SECRET as a plain value in one service's extraEnv",
         {"saver": {"extraEnv": [{"name": "S3_SECRET", "value": "SENTINEL"}]}}, "extraEnv S3_SECRET: secrets come from Secrets"),
        ("the webhooks among the settings",
         {"saver": {"config": {"SLUICE_WEBHOOKS": '{"billing": {"url": "https://h.example", "secret": "SENTINEL-webhook-secret"}}'}}},
         "config key \"SLUICE_WEBHOOKS\" is set by the chart"),
        ("the webhooks JSON as a plain extraEnv value",
         {"importer": {"extraEnv": [{"name": "SLUICE_WEBHOOKS",
                                     "value": '{"billing": {"url": "https://h.example", "secret": "SENTINEL-webhook-secret"}}'}]}},
         "extraEnv SLUICE_WEBHOOKS: secrets come from Secrets"),
        ("a webhook secret as a plain value in the saver's extraEnv",
         {"saver": {"extraEnv": [{"name": "BILLING_WEBHOOK_SECRET", "value": "SENTINEL-webhook-secret"}]}},
         "extraEnv BILLING_WEBHOOK_SECRET: secrets come from Secrets"),
        ("a misspelt webhooks value (values.schema.json)", {"webhooks": {"existingSecretName": "sluice-webhooks"}},
         "additional properties 'existingSecretName' not allowed"),
        ("an empty NetworkPolicy peer in webhooksTo (values.schema.json)", {"networkPolicy": {"webhooksTo": [{}]}}, "minProperties"),
        ("OTLP headers without an endpoint", {"otel": {"headers": {"existingSecret": "otlp-headers"}}},
         "otel.headers.existingSecret: set otel.endpoint"),
        ("an empty NetworkPolicy peer (values.schema.json)", {"networkPolicy": {"fetchFrom": [{}]}}, "minProperties"),
        ("a misspelt networkPolicy value (values.schema.json)", {"networkPolicy": {"metricFrom": []}},
         "additional properties 'metricFrom' not allowed"),
        ("a non-CIDR in networkPolicy.internet.except (values.schema.json)",
         {"networkPolicy": {"internet": {"except": ["private"]}}}, "does not match pattern"),
    ]
    for i, (name, values, message) in enumerate(cases):
        path = write_values(tmp, f"negative-{i}", values)
        result = helm_template(helm, kube_version, [path])
        check(f"chart refuses {name}", result.returncode != 0 and message in result.stderr, result.stderr.strip()[-300:])
        if "SENTINEL" in yaml.safe_dump(values):
            check(f"chart's refusal of {name} does not print the secret", "SENTINEL" not in result.stderr)


def accepted_cases(helm, kube_version, tmp):
    """Settings next to the refused ones that the chart must accept as they are."""
    cases = [
        ("NATS URLs without credentials (IPv6, several, TLS)",
         {"nats": {"url": "nats://[fd00::1]:4222,tls://nats-1.nats.svc:4222/path@x"}},
         lambda env: env["NATS_URL"].get("value") == "nats://[fd00::1]:4222,tls://nats-1.nats.svc:4222/path@x"),
        ("SLUICE_NATS_CREDS as a plain extraEnv value (a file path, not the secret)",
         {"extraEnv": [{"name": "SLUICE_NATS_CREDS", "value": "/var/run/nats/sluice.creds"}]},
         lambda env: env["SLUICE_NATS_CREDS"].get("value") == "/var/run/nats/sluice.creds"),
        ("a secret-named extraEnv from a Secret (valueFrom)",
         {"extraEnv": [{"name": "S3_SECRET", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}}]},
         lambda env: "secretKeyRef" in env["S3_SECRET"].get("valueFrom", {})),
    ]
    for i, (name, values, expect) in enumerate(cases):
        path = write_values(tmp, f"accepted-{i}", values)
        result = helm_template(helm, kube_version, [path])
        if not check(f"chart accepts {name}", result.returncode == 0, result.stderr.strip()[-300:]):
            continue
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        r = Render(name, docs, values)
        check(f"chart renders {name} as given, for every service", all(expect(r.env(c)) for c in SERVICES))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", default=None, help="helm binary (default: .local/bin/helm, then PATH)")
    parser.add_argument("--kube-version", default=os.environ.get("KUBE_VERSION", "1.37.0"))
    parser.add_argument("--readme", default=str(REPO / "docs" / "configuration.md"), help="where the Configuration table is")
    args = parser.parse_args()
    helm = args.helm or (str(REPO / ".local/bin/helm") if (REPO / ".local/bin/helm").exists() else shutil.which("helm"))
    if not helm:
        print("helm not found: run deploy/helm/check.sh, which installs it")
        print("0 passed, 1 failed")
        return 1
    kv = args.kube_version

    readme = readme_variables(args.readme)
    check("README: the Configuration table lists variables", len(readme) >= 20, f"{len(readme)} found")
    check_settings_are_values(readme)
    consumers = stream_of_consumer()
    check("code: each service's input stream is known", set(SERVICES) <= set(consumers), str(consumers))

    with tempfile.TemporaryDirectory() as tmp:
        sets = {n: render(helm, kv, n, [HERE / "ci" / f"{n}.yaml"]) for n in ("default", "minimal", "everything")}

        created = {
            "database": {"url": "postgres://sluice:SENTINEL-db-password@db:5432/sluice"},
            "nats": {
                "auth": {"user": "SENTINEL-user", "password": "SENTINEL-password", "token": "SENTINEL-token",
                         "creds": "SENTINEL-creds-file", "nkey": "SENTINEL-nkey-seed"},
                "tls": {"enabled": True, "ca": "SENTINEL-ca-pem", "cert": "SENTINEL-cert-pem", "key": "SENTINEL-key-pem"},
            },
        }
        sets["created-secrets"] = render(helm, kv, "created-secrets", [write_values(tmp, "created", created)])
        hpa = {s: {"autoscaling": {"hpa": {"enabled": True}}} for s in SERVICES}
        sets["hpa"] = render(helm, kv, "hpa", [write_values(tmp, "hpa", hpa)])
        skip = {"setup": {"database": False}}
        sets["skip-database"] = render(helm, kv, "skip-database", [write_values(tmp, "skip", skip)])
        # No scrapers, no internet but one file server, DNS anywhere, and a
        # hosted collector (https, headers from a Secret, any address on 443).
        closed = {
            "otel": {"endpoint": "https://otlp.example.com/v1", "headers": {"existingSecret": "otlp-headers"}},
            "networkPolicy": {"metricsFrom": [], "dns": {"to": []}, "otel": {"to": []}, "internet": {"enabled": False},
                              "fetchFrom": [{"ipBlock": {"cidr": "10.12.0.5/32"}}]},
        }
        sets["network-closed"] = render(helm, kv, "network-closed", [write_values(tmp, "closed", closed)])
        # The console with the chart's own Secrets (its token among them) and
        # NATS credentials and TLS to pass on; then read-only, in the closed network.
        with_console = copy.deepcopy(created)
        with_console["console"] = {"enabled": True, "token": {"value": "SENTINEL-console-token"}}
        sets["console"] = render(helm, kv, "console", [write_values(tmp, "console", with_console)])
        read_only = copy.deepcopy(closed)
        read_only["console"] = {"enabled": True, "service": {"type": "LoadBalancer"}}
        read_only["networkPolicy"]["consoleFrom"] = []
        sets["console-read-only"] = render(helm, kv, "console-read-only", [write_values(tmp, "console-ro", read_only)])
        # Completion webhooks from an existing Secret, the console on (it must
        # not get them), a target's secret through the saver's extraEnv; then
        # in the closed network, with one receiver inside it.
        with_webhooks = {
            "webhooks": {"existingSecret": "sluice-webhooks"},
            "console": {"enabled": True},
            "saver": {"extraEnv": [{"name": "BILLING_WEBHOOK_SECRET",
                                    "valueFrom": {"secretKeyRef": {"name": "sluice-webhook-secrets", "key": "billing"}}}]},
        }
        sets["webhooks"] = render(helm, kv, "webhooks", [write_values(tmp, "webhooks", with_webhooks)])
        webhooks_closed = copy.deepcopy(closed)
        webhooks_closed["webhooks"] = {"existingSecret": "sluice-webhooks", "existingSecretKey": "targets.json"}
        webhooks_closed["networkPolicy"]["webhooksTo"] = [{"ipBlock": {"cidr": "10.12.0.7/32"}}]
        webhooks_closed["downloadConfig"] = {"SLUICE_ALLOW_NETWORKS": "10.12.0.5/32,10.12.0.7/32"}
        sets["webhooks-closed"] = render(helm, kv, "webhooks-closed", [write_values(tmp, "webhooks-closed", webhooks_closed)])

        for name, r in sets.items():
            if r is None:
                continue
            check_kube_validate(r, kv)
            check_security(r)
            check_probes_and_grace(r, readme)
            check_hook(r)
            check_values_reach(r)
            check_secrets_by_name(r)
            check_selectors(r)
            check_custom_resources(r, consumers)
            check_network_policies(r)
            check_otel_headers(r)
            check_webhooks(r)
            check_console(r)

        if sets["default"]:
            r = sets["default"]
            check_variables(r, readme, expect_all=False)
            check("default: SLUICE_STREAM_REPLICAS is 3 (a clustered NATS)",
                  r.env("setup").get("SLUICE_STREAM_REPLICAS", {}).get("value") == "3")
            check("default: no KEDA, ServiceMonitor or HPA objects",
                  not (r.kind("ScaledObject") or r.kind("ServiceMonitor") or r.kind("HorizontalPodAutoscaler")))
            check("default: a PodDisruptionBudget per service", len(r.kind("PodDisruptionBudget")) == 3)
            check("default: the console is off", r.workload(CONSOLE) is None and not r.values["console"]["enabled"])
            check("default: no webhooks (SLUICE_WEBHOOKS in no container)",
                  not any("SLUICE_WEBHOOKS" in r.env(c) for c in WORKLOADS))
            check_nats_values(r)
        if sets["everything"]:
            r = sets["everything"]
            check_variables(r, readme, expect_all=True)
            check("everything: a ScaledObject and a ServiceMonitor per service",
                  len(r.kind("ScaledObject")) == 3 and len(r.kind("ServiceMonitor")) == 3)
            check("everything: existing Secrets only, none created", not r.kind("Secret"))
            check("everything: the download credentials reach the importer and the fetcher only",
                  all("SLUICE_DOWNLOAD_CREDENTIALS" in r.env(c) for c in ("importer", "fetcher"))
                  and not any("SLUICE_DOWNLOAD_CREDENTIALS" in r.env(c) for c in ("saver", "setup")))
            check("everything: the webhooks reach the importer and the saver only",
                  all(r.env(c).get("SLUICE_WEBHOOKS", {}).get("value") == WEBHOOKS_FILE for c in WEBHOOK_USERS)
                  and not any("SLUICE_WEBHOOKS" in r.env(c) for c in ("fetcher", "setup", CONSOLE)))
            check("everything: the saver guards its webhook POSTs as the importer and fetcher their downloads",
                  all(r.env("saver").get(k) == r.env(c).get(k) is not None for k in GUARD_ENV for c in ("importer", "fetcher")))
            ledger = ns_pod("finance", **{"app.kubernetes.io/name": "ledger"})
            check("everything: the saver reaches the webhook receiver of networkPolicy.webhooksTo; importer and fetcher do not",
                  allows(r, "saver", "egress", ledger, 8080)
                  and not any(allows(r, c, "egress", ledger, 8080) for c in ("importer", "fetcher", "setup")))
            check("everything: the saver POSTs webhooks to the internet (443), not to the managed PostgreSQL's range on it",
                  allows(r, "saver", "egress", {"ip": PUBLIC_SAMPLES[0]}, 443) and not allows(r, "saver", "egress", {"ip": "10.20.1.2"}, 443))
            check("everything: explicit saver grace period kept", r.workload("saver")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 150)
            check("everything: large numbers keep their digits",
                  r.env("importer")["SLUICE_MAX_ACK_PENDING"].get("value") == "1000000")
            check("everything: the saver reaches the managed PostgreSQL (10.20.0.0/16) on networkPolicy.database.port only",
                  allows(r, "saver", "egress", {"ip": "10.20.1.2"}, 5433) and not allows(r, "saver", "egress", {"ip": "10.20.1.2"}, 5432))
            check("everything: importer and fetcher do not reach the managed PostgreSQL",
                  not any(allows(r, c, "egress", {"ip": "10.20.1.2"}, 5433) for c in ("importer", "fetcher")))
            csv = ns_pod("files", **{"app.kubernetes.io/name": "csv-server"})
            check("everything: the fetcher reaches the CSV server of networkPolicy.fetchFrom; the saver does not",
                  allows(r, "fetcher", "egress", csv, 8080) and not allows(r, "saver", "egress", csv, 8080))
            check("everything: only Prometheus in observability may scrape, not its neighbours",
                  allows(r, "saver", "ingress", ns_pod("observability", **{"app.kubernetes.io/name": "prometheus"}), 9090)
                  and not allows(r, "saver", "ingress", ns_pod("observability", **{"app.kubernetes.io/name": "grafana"}), 9090)
                  and not allows(r, "saver", "ingress", ns_pod("monitoring", **{"app.kubernetes.io/name": "prometheus"}), 9090))
            check("everything: an address added to networkPolicy.internet.except is closed (198.18.0.1)",
                  not allows(r, "fetcher", "egress", {"ip": "198.18.0.1"}, 443))
            port = int(r.values["console"]["service"]["port"])
            proxy = ns_pod(NAMESPACE, **{"app.kubernetes.io/name": "oauth2-proxy"})
            check("everything: only the auth proxy of networkPolicy.consoleFrom opens the console's pages",
                  allows(r, CONSOLE, "ingress", proxy, port)
                  and not allows(r, CONSOLE, "ingress", ns_pod(NAMESPACE, **{"app.kubernetes.io/name": "curl"}), port)
                  and not allows(r, CONSOLE, "ingress", ns_pod("other", **{"app.kubernetes.io/name": "oauth2-proxy"}), port))
            check("everything: the console's pages are closed to the services' own pods",
                  not any(allows(r, c, "egress", ns_pod(NAMESPACE, **{"app.kubernetes.io/component": CONSOLE}), port)
                          for c in COMPONENTS))
        if sets["minimal"]:
            r = sets["minimal"]
            check_variables(r, readme, expect_all=False)
            check("minimal: nothing optional (no PDB, Service, ServiceMonitor, autoscaler, created Secret, NetworkPolicy)",
                  not any(r.kind(k) for k in ("PodDisruptionBudget", "Service", "ServiceMonitor", "ScaledObject",
                                              "HorizontalPodAutoscaler", "Secret", "NetworkPolicy")))
            check("minimal: streams with one replica", r.env("setup")["SLUICE_STREAM_REPLICAS"].get("value") == "1")
        if sets["console"]:
            r = sets["console"]
            check("console: a PodDisruptionBudget for it too", r.one("PodDisruptionBudget", f"{RELEASE}-{CONSOLE}") is not None)
            check("console: its token Secret exists before the pods, as the chart's other Secrets (a hook of weight -10)",
                  r.one("Secret", f"{RELEASE}-{CONSOLE}")["metadata"].get("annotations", {}).get("helm.sh/hook-weight") == "-10")
            check("console: the default networkPolicy.consoleFrom lets in pods of the release's namespace, not others",
                  allows(r, CONSOLE, "ingress", ns_pod(NAMESPACE, **{"app.kubernetes.io/name": "oauth2-proxy"}), 8080)
                  and not allows(r, CONSOLE, "ingress", ns_pod("monitoring", **{"app.kubernetes.io/name": "prometheus"}), 8080))
            ours = r.workload(CONSOLE)["spec"]["template"]["metadata"]["annotations"].get("checksum/secrets")
            saver = r.workload("saver")["spec"]["template"]["metadata"]["annotations"].get("checksum/secrets")
            check("console: its token counts in its pods' checksum/secrets, not in the services'",
                  ours and saver and ours != saver
                  and saver == sets["created-secrets"].workload("saver")["spec"]["template"]["metadata"]["annotations"].get("checksum/secrets")
                  if sets["created-secrets"] else False)
        if sets["console-read-only"]:
            r = sets["console-read-only"]
            check("console-read-only: networkPolicy.consoleFrom [] lets nobody in (port-forward only)",
                  not any(allows(r, CONSOLE, "ingress", end, 8080) for end in (ns_pod(NAMESPACE), ns_pod("ingress-nginx"), {"ip": "10.1.2.3"})))
        if sets["created-secrets"]:
            r = sets["created-secrets"]
            sentinels = re.findall(r"SENTINEL-[a-z-]+", yaml.safe_dump(created))
            for d in r.docs:
                text = yaml.safe_dump(d)
                if d["kind"] != "Secret":
                    leaked = [s for s in sentinels if s in text or base64.b64encode(s.encode()).decode()[:12] in text]
                    check(f"created-secrets: {d['kind']} {d['metadata']['name']} inlines no secret", not leaked, str(leaked))
            secret_text = "".join(yaml.safe_dump(d) for d in r.kind("Secret"))
            check("created-secrets: the chart's Secrets hold every secret value",
                  all(base64.b64encode(v.encode()).decode() in secret_text
                      for v in (created["database"]["url"], *created["nats"]["auth"].values(),
                                created["nats"]["tls"]["ca"], created["nats"]["tls"]["cert"], created["nats"]["tls"]["key"])))
            check("created-secrets: three Secrets (database, NATS auth, NATS TLS)", len(r.kind("Secret")) == 3)
            for component in COMPONENTS:
                env = r.env(component)
                check(f"created-secrets: {component} gets user, password, token, creds, nkey and TLS",
                      all(k in env for k in ("SLUICE_NATS_USER", "SLUICE_NATS_PASSWORD", "SLUICE_NATS_TOKEN", "SLUICE_NATS_CREDS",
                                             "SLUICE_NATS_NKEY", "SLUICE_NATS_TLS_CA", "SLUICE_NATS_TLS_CERT", "SLUICE_NATS_TLS_KEY")))
            default_annotations = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"].get("checksum/secrets")
                                   for d in sets["default"].kind("Deployment")} if sets["default"] else {}
            ours = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"].get("checksum/secrets")
                    for d in r.kind("Deployment")}
            check("created-secrets: changing a secret value rolls the pods (checksum annotation)",
                  ours and default_annotations and all(ours[k] != default_annotations.get(k) for k in ours))
        if sets["default"]:
            r = sets["default"]
            check("default: a NetworkPolicy per service and one for the setup Job", len(r.kind("NetworkPolicy")) == 4)
            check("default: the metrics port is closed to other pods of the release's namespace",
                  not any(allows(r, c, "ingress", ns_pod(NAMESPACE, **{"app.kubernetes.io/name": "curl"}), 9090) for c in SERVICES))
            check("default: the saver and setup reach no address outside the cluster (no internet)",
                  not any(allows(r, c, "egress", {"ip": ip}, port) for c in ("saver", "setup")
                          for ip in PUBLIC_SAMPLES + PRIVATE_SAMPLES for port in (80, 443, 5432)))
        if sets["network-closed"]:
            r = sets["network-closed"]
            check("network-closed: the file server of networkPolicy.fetchFrom is open to importer and fetcher, on any port",
                  all(allows(r, c, "egress", {"ip": "10.12.0.5"}, port) for c in ("importer", "fetcher") for port in (80, 8080)))
            check("network-closed: the file server is closed to the saver",
                  not allows(r, "saver", "egress", {"ip": "10.12.0.5"}, 80))
            check("network-closed: the next address is closed (10.12.0.6)",
                  not allows(r, "fetcher", "egress", {"ip": "10.12.0.6"}, 80))
            check("network-closed: an empty networkPolicy.dns.to allows DNS to any address",
                  all(allows(r, c, "egress", {"ip": "8.8.8.8"}, 53, "UDP") for c in COMPONENTS))
            check("network-closed: the hosted collector (https, any address) is reached on 443, nothing else",
                  all(allows(r, c, "egress", {"ip": "93.184.216.34"}, 443) and not allows(r, c, "egress", {"ip": "93.184.216.34"}, 80)
                      for c in ("saver", "setup")))
        if sets["webhooks"]:
            r = sets["webhooks"]
            check("webhooks: SLUICE_WEBHOOKS reaches the importer and the saver, not the fetcher, setup or console",
                  all("SLUICE_WEBHOOKS" in r.env(c) for c in WEBHOOK_USERS)
                  and not any("SLUICE_WEBHOOKS" in r.env(c) for c in ("fetcher", "setup", CONSOLE)))
            check("webhooks: the saver has the network guard (SLUICE_DENY_NETWORKS, downloadConfig's default)",
                  r.env("saver").get("SLUICE_DENY_NETWORKS", {}).get("value") == r.values["downloadConfig"]["SLUICE_DENY_NETWORKS"])
            e = r.env("saver").get("BILLING_WEBHOOK_SECRET", {})
            check("webhooks: a target's secret reaches the saver from its Secret, never as a value",
                  "value" not in e and e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "sluice-webhook-secrets", str(e))
            check("webhooks: the saver POSTs to the internet on any port (443, 8443), not to private or metadata addresses",
                  all(allows(r, "saver", "egress", {"ip": ip}, port) for ip in PUBLIC_SAMPLES for port in (443, 8443))
                  and not any(allows(r, "saver", "egress", {"ip": ip}, 443) for ip in PRIVATE_SAMPLES))
            check("webhooks: the saver still reaches PostgreSQL; setup and the console get no internet",
                  allows(r, "saver", "egress", ns_pod(NAMESPACE, **{"app.kubernetes.io/name": "postgresql"}), 5432)
                  and not any(allows(r, c, "egress", {"ip": PUBLIC_SAMPLES[0]}, 443) for c in ("setup", CONSOLE)))
        if sets["webhooks-closed"]:
            r = sets["webhooks-closed"]
            check("webhooks-closed: the receiver of networkPolicy.webhooksTo is open to the saver, on any port; not to importer and fetcher",
                  all(allows(r, "saver", "egress", {"ip": "10.12.0.7"}, port) for port in (80, 8080))
                  and not any(allows(r, c, "egress", {"ip": "10.12.0.7"}, 80) for c in ("importer", "fetcher")))
            check("webhooks-closed: the file server of networkPolicy.fetchFrom stays closed to the saver; the next address too",
                  not allows(r, "saver", "egress", {"ip": "10.12.0.5"}, 80) and not allows(r, "saver", "egress", {"ip": "10.12.0.8"}, 80))
            check("webhooks-closed: networkPolicy.internet.enabled=false closes the internet to the saver's webhooks too",
                  not any(allows(r, "saver", "egress", {"ip": ip}, 8443) for ip in PUBLIC_SAMPLES))
            check("webhooks-closed: the saver's guard allows the receiver, as the importer's",
                  r.env("saver").get("SLUICE_ALLOW_NETWORKS", {}).get("value") == "10.12.0.5/32,10.12.0.7/32"
                  == r.env("importer").get("SLUICE_ALLOW_NETWORKS", {}).get("value"))
        if sets["hpa"]:
            check("hpa: an HPA per service on CPU", len(sets["hpa"].kind("HorizontalPodAutoscaler")) == 3)
        if sets["skip-database"]:
            r = sets["skip-database"]
            c = r.container("setup")
            check("skip-database: setup runs with --skip-database and no DATABASE_URL",
                  c.get("args") == ["--skip-database"] and "DATABASE_URL" not in r.env("setup"))

        negative_cases(helm, kv, tmp)
        accepted_cases(helm, kv, tmp)

    check_chart_meta()
    check_image()
    check_compose(readme)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
