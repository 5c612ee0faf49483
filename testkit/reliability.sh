#!/usr/bin/env bash
# Reruns every scenario of the README's Reliability table and prints the
# lines the table is made from (each test prints what was injected, how
# many rounds or cases, and the outcome).
#
#   testkit/reliability.sh                 # full: 20,000 changes, 200 crash rounds, 60 s per fuzz target
#   ROUNDS=20 CHANGES=4000 FUZZ_SECONDS=0 testkit/reliability.sh   # quicker
#
# Variables: CHANGES (fault scenario, both sides together), ROUNDS (crash
# campaign), SEED (crash campaign seed; default: time), FUZZ_SECONDS (per
# cargo-fuzz target; 0 skips cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

CHANGES=${CHANGES:-20000}
ROUNDS=${ROUNDS:-200}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() {
  echo "== $*" >&2
  "$@" 2>&1 | tee -a "$out" | grep -E '^(faults|crash campaign|round [0-9]+: kill|hostile|bad input|fuzz corpus|rotation|limits|pending peers|local files|partner claims|test result)' >&2
}

run env ORGSYNC_FAULT_CHANGES="$CHANGES" cargo test --release --test e2e faults:: -- --nocapture
run env ORGSYNC_CRASH_ROUNDS="$ROUNDS" ${SEED:+ORGSYNC_CRASH_SEED=$SEED} \
  cargo test --release --test e2e crash_campaign:: -- --nocapture
run cargo test --release --test e2e hostile:: -- --nocapture
run cargo test --release --test e2e bad_input:: -- --nocapture
run cargo test --release --test e2e fuzz_corpus:: -- --nocapture
for t in rotation limits pending_peers local_files partner_claims; do
  run cargo test --release --test e2e "$t::" -- --nocapture
done

if [ "$FUZZ_SECONDS" -gt 0 ]; then
  for t in frame_decode envelope_open bundle_parse pairing_message config_parse import_line; do
    echo "== cargo fuzz run $t ($FUZZ_SECONDS s)" >&2
    # New inputs go to a scratch folder (listed first), not into the seed
    # corpus. libFuzzer's last line: "Done N runs in S second(s)"; a crash
    # exits non-zero.
    scratch=$(mktemp -d)
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 |
      grep -E '^(Done|stat::number_of_executed_units)' | sed "s/^/fuzz $t: /") | tee -a "$out" >&2
    rm -rf "$scratch"
  done
fi
echo "== summary" >&2
grep -E '^(faults: [0-9]+ changes|crash campaign: [0-9]+ rounds .*converged|hostile:|bad input:|fuzz corpus:|fuzz [a-z_]+: Done)' "$out"
