#!/usr/bin/env bash
# Exposure toggles default off (Catalyst blueprint convention): the API is published
# through a gateway or an ingress only when asked, with TLS from cert-manager.
#
#   1. default render: no HTTPRoute, ReferenceGrant, Ingress or Certificate, even where
#      the Gateway API and cert-manager are served;
#   2. opt-in (httpRoute, referenceGrant, ingress, tls.certificate; APIs served): each one;
#   3. explicit off: none;
#   4. opt-in on a cluster without the Gateway API and cert-manager: no HTTPRoute,
#      ReferenceGrant or Certificate (the capability gates); the Ingress (a built-in API) stays.
#
# Usage: bash chart/tests/exposure-toggle.sh [CHART_DIR]
# helm: $HELM, else helm on PATH, else the project's pinned helm (python3 -m testkit.tools).
set -euo pipefail

TOGGLE_NAME="exposure-toggle"
# shellcheck source=toggle-render.sh
source "$(dirname "${BASH_SOURCE[0]}")/toggle-render.sh"
APIS=(--api-versions gateway.networking.k8s.io/v1/HTTPRoute
      --api-versions gateway.networking.k8s.io/v1beta1/ReferenceGrant
      --api-versions cert-manager.io/v1/Certificate)

kinds_of() {  # kinds_of FILE KIND...: the lines declaring those kinds
  local file="$1"; shift
  local pattern
  pattern="$(IFS='|'; echo "$*")"
  grep -nE "^kind: ($pattern)$" "$file" || true
}

expect_none() {  # expect_none NAME DESCRIPTION KIND...
  local name="$1" description="$2"; shift 2
  local found
  found="$(kinds_of "$TMP/$name.yaml" "$@")"
  if [ -n "$found" ]; then
    echo "FAIL: $description renders exposure objects:" >&2
    echo "$found" >&2
    exit 1
  fi
  echo "  PASS: $description renders no $(IFS=/; echo "$*")"
}

expect_each() {  # expect_each NAME DESCRIPTION KIND...
  local name="$1" description="$2"; shift 2
  for kind in "$@"; do
    if [ -z "$(kinds_of "$TMP/$name.yaml" "$kind")" ]; then
      echo "FAIL: $description renders no $kind: the toggle is not wired" >&2
      exit 1
    fi
  done
  echo "  PASS: $description renders $(IFS=/; echo "$*")"
}

OPT_IN=(--set httpRoute.enabled=true
        --set "httpRoute.parentRefs[0].name=platform" --set "httpRoute.parentRefs[0].namespace=gateway-system"
        --set "httpRoute.hostnames[0]=metering.example.com"
        --set httpRoute.referenceGrant.enabled=true
        --set ingress.enabled=true --set "ingress.hosts[0]=metering.example.com"
        --set tls.certificate.enabled=true --set tls.certificate.issuerRef.name=platform-ca)
ALL=(HTTPRoute ReferenceGrant Ingress Certificate)

echo "[exposure-toggle] 1. default render"
render default "${APIS[@]}"
expect_none default "the default render (APIs served)" "${ALL[@]}"

echo "[exposure-toggle] 2. opt-in"
render optin "${APIS[@]}" "${OPT_IN[@]}"
expect_each optin "httpRoute, referenceGrant, ingress and tls.certificate enabled" "${ALL[@]}"

echo "[exposure-toggle] 3. explicit off"
render off "${APIS[@]}" --set httpRoute.enabled=false --set ingress.enabled=false --set tls.certificate.enabled=false
expect_none off "httpRoute, ingress and tls.certificate set to false" "${ALL[@]}"

echo "[exposure-toggle] 4. opt-in without the Gateway API and cert-manager"
render noapi "${OPT_IN[@]}"
expect_none noapi "the opt-in on a cluster without gateway.networking.k8s.io and cert-manager.io" \
  HTTPRoute ReferenceGrant Certificate
expect_each noapi "the opt-in on a cluster without them" Ingress

echo "[exposure-toggle] all cases pass"
