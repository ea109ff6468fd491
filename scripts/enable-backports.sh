#!/usr/bin/env bash
# Adds bookworm-backports (for valkey-server 8) using the same mirror the machine
# already uses for bookworm, so no mirror host is ever hard-coded here.
set -euo pipefail

target=/etc/apt/sources.list.d/bookworm-backports.sources
[ -e "$target" ] && exit 0

uri=""
keyring=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -e "$f" ] || continue
  # deb822 stanzas: remember URIs/Signed-By until the stanza that lists the bookworm suite.
  read -r uri keyring < <(awk '
    function flush() { if (found && u != "") { print u, k; done=1; exit } found=0; u=""; k="" }
    /^[[:space:]]*$/ { flush() }
    /^URIs:/        { u=$2 }
    /^Signed-By:/   { k=$2 }
    /^Suites:/      { for (i = 2; i <= NF; i++) if ($i == "bookworm") found=1 }
    END             { if (!done) flush() }
  ' "$f") || true
  [ -n "$uri" ] && break
done
if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
  uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
fi
if [ -z "$uri" ]; then
  echo "enable-backports: no bookworm entry found in the apt sources; cannot derive the backports line" >&2
  exit 1
fi

{
  echo "Types: deb"
  echo "URIs: $uri"
  echo "Suites: bookworm-backports"
  echo "Components: main"
  [ -n "$keyring" ] && echo "Signed-By: $keyring"
} > "$target"
echo "enable-backports: added bookworm-backports from the machine's bookworm mirror"
