#!/usr/bin/env bash
# Peak resident memory of `do-scaler run` (release build) with a 5 s interval on 1,000 droplets,
# with rules over [10m] ranges, run long enough for the sample history to be full.
# The sim runs as its own process, so only the daemon is measured.
# Usage: bash bench/memory.sh            (12 minutes)
#        DURATION=120 bash bench/memory.sh   (a shorter look; the history is then not full)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-720}
DROPLETS=${DROPLETS:-1000}

cargo build --release --quiet
bin=target/release/do-scaler
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# 50 % CPU on every droplet: the rules hold, so the group stays at 1,000 throughout.
"$bin" sim --droplets "$DROPLETS" --managed --rate-limit off --open-ports 22 \
  --demand "$DROPLETS" > "$work/sim.env" 2> "$work/sim.log" &
for _ in $(seq 1 100); do
  [ -s "$work/sim.env" ] && break
  sleep 0.2
done
# The line is `DIGITALOCEAN_API_URL=... DIGITALOCEAN_TOKEN=...`.
export $(cat "$work/sim.env")

mkdir -p "$work/conf.d"
cat > "$work/do-scaler.toml" <<EOF
interval = "5s"
state = "$work/state.db"
[status_api]
listen = "127.0.0.1:0"
EOF
cat > "$work/conf.d/web.toml" <<'EOF'
tag = "web"
min = 1
max = 2000
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[scale_in]
choose = "least_busy"
by = '1 - avg by (droplet_id) (rate(node_cpu_seconds_total{mode="idle"}[10m]))'
[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[10m]))'
target = 0.5
[[rule]]
name = "memory"
when = 'avg(avg_over_time(node_memory_MemAvailable_bytes[10m]) / node_memory_MemTotal_bytes) < 0.15'
for = "2m"
change = "+2"
EOF

"$bin" run --config "$work/do-scaler.toml" 2> "$work/run.log" &
pid=$!
echo "do-scaler run (pid $pid) on $DROPLETS droplets, 5 s interval, [10m] ranges, for ${DURATION}s"
started=$SECONDS
while (( SECONDS - started < DURATION )); do
  sleep 30
  kill -0 "$pid" 2>/dev/null || { echo "do-scaler run stopped:"; tail -20 "$work/run.log"; exit 1; }
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "  $((SECONDS - started)) s: resident $((rss / 1024)) MB, peak so far $((hwm / 1024)) MB"
done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
ticks=$(grep -c '"tick"\|desired=' "$work/run.log" || true)
echo "peak resident memory: $((hwm / 1024)) MB; resident at the end: $((rss / 1024)) MB (goal: under 64 MB)"
echo "log lines with a decision: $ticks; tick failures: $(grep -c 'tick failed' "$work/run.log" || true)"
