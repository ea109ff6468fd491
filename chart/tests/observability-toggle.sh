#!/usr/bin/env bash
# Observability toggles default off (Catalyst blueprint convention).
#
#   1. default render: no monitoring.coreos.com object, even where the CRDs exist;
#   2. opt-in (serviceMonitor.enabled=true, prometheusRule.enabled=true, CRDs present):
#      a ServiceMonitor and a PrometheusRule, each by its own switch;
#   3. explicit off: none;
#   4. opt-in on a cluster without the CRDs: none (the capability gate);
#   5. backend clickhouse (only when the upstream subchart is vendored): none.
#
# Usage: bash chart/tests/observability-toggle.sh [CHART_DIR]
# helm: $HELM, else helm on PATH, else the project's pinned helm (python3 -m testkit.tools).
set -euo pipefail

CHART_DIR="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
MONITORING_API="monitoring.coreos.com/v1"
UPSTREAM="openmeter"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

find_helm() {
  if [ -n "${HELM:-}" ]; then echo "$HELM"; return; fi
  if command -v helm >/dev/null 2>&1; then command -v helm; return; fi
  local repo
  repo="$(cd "$CHART_DIR/.." && pwd)"
  if [ -f "$repo/testkit/tools.py" ]; then
    (cd "$repo" && python3 -m testkit.tools | sed -n 's/^helm: //p')
    return
  fi
  echo "FAIL: helm not found; put it on PATH or set HELM" >&2
  exit 2
}
HELM_BIN="$(find_helm)"

# The upstream chart is a dependency of the clickhouse profile only. Where it is
# not vendored (no `helm dependency build`, e.g. no registry access), render a
# copy whose Chart.yaml omits it: helm refuses a missing dependency even when its
# condition is off, and drops a disabled one before rendering anyway.
upstream_vendored() {
  compgen -G "$CHART_DIR/charts/${UPSTREAM}-*.tgz" >/dev/null || [ -f "$CHART_DIR/charts/$UPSTREAM/Chart.yaml" ]
}
RENDER_DIR="$CHART_DIR"
if ! upstream_vendored; then
  RENDER_DIR="$TMP/chart"
  cp -R "$CHART_DIR" "$RENDER_DIR"
  awk '/^dependencies:/ {skip=1; next} skip && /^[^[:space:]#-]/ {skip=0} !skip' \
    "$CHART_DIR/Chart.yaml" > "$RENDER_DIR/Chart.yaml"
  echo "[observability-toggle] upstream $UPSTREAM chart not vendored: rendering the cnpg profile without it"
fi

render() {  # render NAME [helm template args...]
  local name="$1"; shift
  if ! "$HELM_BIN" template smoke "$RENDER_DIR" "$@" > "$TMP/$name.yaml" 2> "$TMP/$name.err"; then
    echo "FAIL: $name render failed:" >&2
    cat "$TMP/$name.err" >&2
    exit 1
  fi
}

monitoring_objects() {  # lines of a render that declare a monitoring.coreos.com object
  grep -nE "^apiVersion: monitoring\.coreos\.com/|^kind: (ServiceMonitor|PodMonitor|PrometheusRule)$" "$1" || true
}

expect_none() {  # expect_none NAME DESCRIPTION
  local found
  found="$(monitoring_objects "$TMP/$1.yaml")"
  if [ -n "$found" ]; then
    echo "FAIL: $2 renders monitoring objects:" >&2
    echo "$found" >&2
    exit 1
  fi
  echo "  PASS: $2 renders no monitoring object"
}

echo "[observability-toggle] 1. default render"
render default --api-versions "$MONITORING_API"
expect_none default "the default render (CRDs present)"

echo "[observability-toggle] 2. opt-in"
for toggle in serviceMonitor:ServiceMonitor prometheusRule:PrometheusRule; do
  switch="${toggle%%:*}"; kind="${toggle##*:}"
  render "optin-$switch" --api-versions "$MONITORING_API" --set "$switch.enabled=true"
  if ! grep -qE "^kind: $kind$" "$TMP/optin-$switch.yaml"; then
    echo "FAIL: $switch.enabled=true renders no $kind: the toggle is not wired" >&2
    exit 1
  fi
  others="$(monitoring_objects "$TMP/optin-$switch.yaml" | grep -E "^[0-9]+:kind: " | grep -vE ":kind: $kind$" || true)"
  if [ -n "$others" ]; then
    echo "FAIL: $switch.enabled=true renders other monitoring objects too:" >&2
    echo "$others" >&2
    exit 1
  fi
  echo "  PASS: $switch.enabled=true renders a $kind"
done

echo "[observability-toggle] 3. explicit off"
render off --api-versions "$MONITORING_API" --set serviceMonitor.enabled=false --set prometheusRule.enabled=false
expect_none off "serviceMonitor.enabled=false, prometheusRule.enabled=false"

echo "[observability-toggle] 4. opt-in without the CRDs"
render nocrd --set serviceMonitor.enabled=true --set prometheusRule.enabled=true
expect_none nocrd "serviceMonitor.enabled=true, prometheusRule.enabled=true on a cluster without $MONITORING_API"

if upstream_vendored; then
  echo "[observability-toggle] 5. backend clickhouse"
  render clickhouse --api-versions "$MONITORING_API" \
    --set catalystBlueprint.backend.kind=clickhouse --set openmeter.enabled=true
  expect_none clickhouse "the clickhouse profile"
else
  echo "[observability-toggle] 5. backend clickhouse: skipped, the upstream $UPSTREAM chart is not vendored"
fi

echo "[observability-toggle] all cases pass"
