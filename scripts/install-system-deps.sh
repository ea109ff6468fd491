#!/usr/bin/env bash
# System packages the test tiers need on Debian 12 (run as root, or with sudo):
# PostgreSQL 15 server binaries and Valkey 8 (bookworm-backports), and Node.js with npm
# for the JS SDK tier (tests/sdk/js) unless a Node.js 18 or newer (MIN_NODE_MAJOR in
# tests/sdk/test_js_sdk.py) is there already
# (Debian 12's own is 18.20 with npm 9, which the tier runs on). The test fixtures start
# their own private instances of the servers; nothing is started here.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: run as root (sudo $0)" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
"$here/enable-backports.sh"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports valkey-server >/dev/null
node_major="$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/')"
if [ "${node_major:-0}" -lt 18 ] || ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
echo "install-system-deps: $(/usr/lib/postgresql/15/bin/postgres --version), $(valkey-server --version | cut -d' ' -f1-3), node $(node --version), npm $(npm --version)"
