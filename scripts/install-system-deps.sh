#!/usr/bin/env bash
# System packages the test tiers need on Debian 12 (run as root, or with sudo):
# PostgreSQL 15 server binaries and Valkey 8 (bookworm-backports). The test fixtures
# start their own private instances of both; nothing is started here.
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
echo "install-system-deps: $(/usr/lib/postgresql/15/bin/postgres --version), $(valkey-server --version | cut -d' ' -f1-3)"
