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

TOGGLE_NAME="observability-toggle"
# shellcheck source=toggle-render.sh
source "$(dirname "${BASH_SOURCE[0]}")/toggle-render.sh"
MONITORING_API="monitoring.coreos.com/v1"

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
