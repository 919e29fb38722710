#!/usr/bin/env bash
# Installs the npm oidc-provider that the token tests run as a real OpenID provider
# (tests/oidc). Idempotent: `npm ci` from the committed lockfile; skipped when the
# installed tree already matches it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/tests/oidc"
command -v node >/dev/null || { echo "node is required (Node.js >= 20.19)" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is required" >&2; exit 1; }
marker="$dir/node_modules/.package-lock.json"
if [[ -f "$marker" && "$marker" -nt "$dir/package-lock.json" ]] \
  && [[ -d "$dir/node_modules/oidc-provider" ]]; then
  echo "oidc-provider already installed in tests/oidc"
  exit 0
fi
npm ci --prefix "$dir" --no-audit --no-fund
