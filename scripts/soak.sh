#!/usr/bin/env bash
# The soak run of SECURITY.md and BENCHMARKS.md: 1,000,000 ext_authz Checks (or the number
# given) against a release build, mixing valid, refused, expired, anonymous and
# new-subject tokens (one in NEW_EVERY, each creating a User) while the configuration is
# edited, broken and mended. Fails on any wrong decision, or on resident memory (settled,
# 15 s after the last check) or open descriptors 10% above the figure after the first
# tenth of the run. Prints the figures.
#
#   ./scripts/soak.sh [CHECKS [NEW_EVERY]]
#
# Each created subject holds about 7 KiB (its User and its cached token: state, not a
# leak), so NEW_EVERY is 10,000 by default: 100 Users over a million checks.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_CHECKS=${1:-1000000} SOAK_NEW_SUBJECT_EVERY=${2:-10000} \
    cargo test --release --locked --test soak -- --nocapture
