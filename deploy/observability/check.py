"""Checks the Grafana dashboard and the Prometheus alert rules against sluice
itself, offline:

- the dashboard is valid JSON Grafana can import (title, uid, panels with
  Prometheus targets), and every PromQL expression in it parses: each is
  written into a rules file as a recording rule for `promtool check rules`;
- the alert rules pass `promtool check rules`;
- every sluice metric either file uses is one docs/operations.md documents (the
  "Metrics and probes" table), so a renamed metric cannot leave a panel or
  an alert silently empty.

    check.py PROMTOOL
Prints one line per check; exits 1 on any failure.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
METRIC = re.compile(r"\bsluice_[a-z_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def documented_metrics() -> set:
    readme = (ROOT / "docs" / "operations.md").read_text()
    section = readme.split("### Metrics and probes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\s*\| `(sluice_[a-z_]+)`", section, re.M))


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and not name.endswith("_total"):
            return name[: -len(suffix)]
    return name


def main() -> int:
    promtool = sys.argv[1]
    failures = []
    documented = documented_metrics()
    if not documented:
        failures.append("docs/operations.md documents no sluice metric (table not found)")

    dashboard = json.loads((HERE / "grafana-dashboard.json").read_text())
    exprs = []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dashboard:
            failures.append(f"dashboard: no {key}")
    for panel in dashboard.get("panels", []):
        targets = panel.get("targets") or []
        if not targets:
            failures.append(f"dashboard panel {panel.get('title')!r} has no targets")
        for target in targets:
            expr = target.get("expr", "")
            if not expr:
                failures.append(f"dashboard panel {panel.get('title')!r}: a target without expr")
            exprs.append((panel.get("title"), expr))
    print(f"dashboard: {len(dashboard.get('panels', []))} panels, {len(exprs)} queries")

    # Every panel query as a recording rule: promtool parses the PromQL.
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as rules:
        rules.write("groups:\n  - name: dashboard\n    rules:\n")
        for n, (_, expr) in enumerate(exprs):
            rules.write(f"      - record: sluice_dashboard_query_{n}\n        expr: {json.dumps(expr)}\n")
    for name, path in (("dashboard queries", rules.name), ("alerts.yaml", str(HERE / "alerts.yaml"))):
        out = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        print(f"promtool check rules {name}: {'ok' if out.returncode == 0 else 'FAILED'}")
        if out.returncode != 0:
            failures.append(f"promtool rejected {name}:\n{out.stdout}{out.stderr}")
    Path(rules.name).unlink()

    used = {base(m) for _, e in exprs for m in METRIC.findall(e)}
    used |= {base(m) for m in METRIC.findall((HERE / "alerts.yaml").read_text())}
    unknown = sorted(used - documented)
    print(f"metrics used: {len(used)}, documented in docs/operations.md: {len(documented)}")
    if unknown:
        failures.append(f"metrics used but not in the table of docs/operations.md: {unknown}")

    for failure in failures:
        print("FAIL", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
