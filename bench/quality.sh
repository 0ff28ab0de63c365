#!/usr/bin/env bash
# The decision-quality harness: every demand trace (step, ramp, 24 h diurnal sine, noisy plateau,
# spike) through the sim at speed against every controller, printing the README's table.
# Not part of `cargo test` or CI (tests/quality.rs plays a shortened step there).
# Usage: bash bench/quality.sh            (QUALITY_SPEED=300 by default; QUALITY_ONLY=step)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo bench --bench quality 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\)'
