#!/usr/bin/env bash
# Fuzzes portcullis with cargo-fuzz (libFuzzer + AddressSanitizer): every target of fuzz/,
# or those named, one after the other, each for FUZZ_SECONDS (default 600), then prints a
# summary per target (executions, speed, coverage, corpus, crashes).
#
#   scripts/fuzz.sh                       # every target, 10 minutes each
#   FUZZ_SECONDS=60 scripts/fuzz.sh token matcho
#
# Each target reads its committed seeds (fuzz/seeds/<target>/) and grows its own corpus in
# fuzz/corpus/<target>/ (not committed). A crash is written to fuzz/artifacts/<target>/;
# reproduce it with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`, fix it, add a
# regression test beside the fixed code and the input to fuzz/seeds/<target>/. The same
# bodies (fuzz/bodies/) run over the seeds in CI: `cargo test --test fuzz_smoke`.
# The stable toolchain takes cargo-fuzz's flags with RUSTC_BOOTSTRAP=1. Runs under
# `nice` (FUZZ_NICE, default 10); one fuzzing process at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-600}
niceness=${FUZZ_NICE:-10}
export RUSTC_BOOTSTRAP=1

all=(token matcho json_schema config_yaml config_json check_request admission_review)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
for t in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    echo "no such target: $t (targets: ${all[*]})" >&2
    exit 2
  fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  nice -n "$niceness" cargo install cargo-fuzz --locked
fi

# Built first, so that each target's time is spent fuzzing.
for t in "${targets[@]}"; do
  (cd fuzz && nice -n "$niceness" cargo fuzz build "$t")
done

logs=fuzz/target/logs
mkdir -p "$logs"
summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  log="$logs/$t.log"
  echo "== $t: ${seconds}s (log: $log)" >&2
  status=0
  nice -n "$niceness" cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  # The last status line: "#N  DONE  cov: C ft: F corp: U/S ..." (or the last "pulse").
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  field() { sed -n "s/.* $1: \([^ ]*\).*/\1/p" <<<"$last"; }
  crashes=$((after - before))
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    crashes="$crashes (exit $status; see $log and fuzz/artifacts/$t/)"
  fi
  summary+=("$(printf '%-17s execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-12s crashes %s' \
    "$t" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
    "$(field cov)" "$(field ft)" "$(field corp)" "$crashes")")
done

echo
printf '%s\n' "${summary[@]}"
exit "$failed"
