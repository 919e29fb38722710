#!/usr/bin/env bash
# The soak run of SECURITY.md and BENCHMARKS.md: 1,000,000 ext_authz Checks (or the number
# given) against a release build, mixing valid, refused, expired, anonymous and
# new-subject tokens while the configuration is edited, broken and mended. Fails on any
# wrong decision, or on resident memory or open descriptors growing 10% past the first
# tenth of the run. Prints the figures.
#
#   ./scripts/soak.sh [CHECKS]
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_CHECKS=${1:-1000000} cargo test --release --locked --test soak -- --nocapture
