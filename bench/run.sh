#!/usr/bin/env bash
# Runs every benchmark whose figures the README reports, printing the machine first.
# Usage: bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "rustc: $(rustc --version)"
echo
echo "== exposition parser against prometheus-parse"
cargo bench --bench parser 2>/dev/null
echo
echo "== one warm tick at 100, 1,000 and 5,000 droplets (sim in the same process, rate limits off)"
cargo bench --bench tick 2>/dev/null
echo
echo "== run --once --dry-run on a 200-droplet group, whole process, and where its time goes"
cargo bench --bench once 2>/dev/null
echo
echo "== reaction time (irate and the example's rate[2m] rule, 5 s interval) and a 25-droplet scale-up's API calls"
cargo bench --bench reaction 2>/dev/null
echo
echo "== a leader's tick of state writes on SQLite and on PostgreSQL (throwaway cluster on loopback)"
cargo bench --bench state 2>/dev/null
echo
echo "== the size of a day's recording of a 50-droplet group"
cargo bench --bench record 2>/dev/null
echo
echo "== peak memory of do-scaler run: 1,000 droplets, 5 s interval, [10m] ranges (12 minutes)"
bash bench/memory.sh
