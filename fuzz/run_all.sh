#!/usr/bin/env bash
# Fuzz every target in turn, SECONDS_PER_TARGET each (default 600), one
# process at a time. New inputs go to work/<target> (git-ignored); the
# committed seeds in corpus/<target> are read, not written. Crashes land in
# artifacts/<target>/ and the log in work/logs/<target>.log.
#
# cargo-fuzz needs nightly -Z flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them.
set -u
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS=1
secs=${SECONDS_PER_TARGET:-600}
targets=${*:-idx csv model_toml safetensors checkpoint}
mkdir -p work/logs
for t in $targets; do
    mkdir -p "work/$t"
    echo "== $t: ${secs}s" | tee -a work/logs/summary.txt
    cargo fuzz run "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -malloc_limit_mb=64 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 >"work/logs/$t.log" 2>&1
    echo "   exit $? $(grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units)' "work/logs/$t.log" | tail -1)" \
        | tee -a work/logs/summary.txt
done
