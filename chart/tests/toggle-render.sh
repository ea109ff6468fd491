# Sourced by the toggle scripts (bash chart/tests/<name>-toggle.sh [CHART_DIR]): the chart
# directory, helm, and a render of the cnpg profile that works with or without the
# upstream chart vendored. Set TOGGLE_NAME before sourcing (it prefixes messages).
# Defines CHART_DIR, UPSTREAM, TMP (removed on exit), HELM_BIN, RENDER_DIR,
# upstream_vendored and render NAME [helm template args...] (writes $TMP/NAME.yaml).

CHART_DIR="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
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
  echo "[$TOGGLE_NAME] upstream $UPSTREAM chart not vendored: rendering the cnpg profile without it"
fi

render() {  # render NAME [helm template args...]
  local name="$1"; shift
  if ! "$HELM_BIN" template smoke "$RENDER_DIR" "$@" > "$TMP/$name.yaml" 2> "$TMP/$name.err"; then
    echo "FAIL: $name render failed:" >&2
    cat "$TMP/$name.err" >&2
    exit 1
  fi
}
