#!/usr/bin/env bash
# Every number in BENCHMARKS.md, from one command: release builds, the three
# loads against the local stack and the reference, the fan-out simulation, the
# 15-minute soak, channels (one room against five per client), the cost model
# and the criterion micro-benchmarks; then the
# scale set (issue #16): the load at the limit (three runs), coalesced delivery
# by the stack's own counters, the deployment envelope and the Lambdas' cold
# starts. JSON and SVGs land in infra/bench/results/.
#
#   infra/bench/run-benchmarks.sh          # everything (~40 min)
#   infra/bench/run-benchmarks.sh scale    # only the scale set (~10 min)
#   infra/bench/run-benchmarks.sh large    # only the large-rooms set of issue #27 (~10 min)
#
# Run it on a quiet machine: each table reports how much CPU other programs took.
set -euo pipefail
only="${1:-all}"
cd "$(dirname "$0")/../.."
out=infra/bench/results
mkdir -p "$out"
target="${CARGO_TARGET_DIR:-target}"
loadgen="$target/release/loadgen"

step() { printf '\n==> %s   (load average: %s)\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }

step "release builds"
cargo build --release -p chat-local -p chat-bench

scale() {
  for run in 1 2 3; do
    step "at the limit, run $run: 1000 clients, 20 senders × 200 msg/s (4 M deliveries/s offered)"
    "$loadgen" compare --clients 1000 --senders 20 --messages 600 --rate 4000 \
      --json "$out/compare-1000-rate4000-$run.json" --svg "$out/latency-cdf-1000-rate4000-$run.svg"
  done
  step "coalesced delivery: 1000 clients, 10 senders, 100 msg/s; one frame per event, then windows 0/100/500 ms"
  "$loadgen" coalescing --clients 1000 --senders 10 --messages 300 --rate 100 --windows-ms 0,100,500 \
    --json "$out/coalescing.json"
  step "deployment envelope: rooms 100/1k/10k/50k × 1/10/100 msg/s"
  "$loadgen" envelope --json "$out/envelope.json" --svg "$out/envelope.svg"
  step "cold starts: x86_64 release builds of the Lambda binaries"
  cargo build --release -p chat-lambdas
  "$loadgen" coldstart --bin-dir "$target/release" --runs 20 --json "$out/coldstart.json"
}
large() {
  step "large rooms (issue #27): join presence as a room fills, seed notices against occupancy frames"
  "$loadgen" presence-cost --json "$out/presence-cost.json"
  step "large rooms: split fan-out simulation, then with 10 members stuck on 429"
  "$loadgen" fanout --split --connections 1000,10000,50000 --concurrency 256 --json "$out/fanout-split.json"
  "$loadgen" fanout --split --connections 10000 --concurrency 256 --stuck 10 --json "$out/fanout-split-stuck.json"
  for run in 1 2 3 4 5 6; do
    step "large rooms, run $run: 1000 clients, 20 senders × 200 msg/s on the stack's default settings"
    "$loadgen" compare --clients 1000 --senders 20 --messages 600 --rate 4000 \
      --json "$out/compare-1000-rate4000-defaults-$run.json" --svg "$out/latency-cdf-1000-rate4000-defaults-$run.svg" --quiet
  done
}
if [ "$only" = scale ]; then
  scale
  exit 0
fi
if [ "$only" = large ]; then
  large
  exit 0
fi

step "100 clients, 10 senders, 10 msg/s in total"
"$loadgen" compare --clients 100 --senders 10 --messages 30 --rate 10 --json "$out/compare-100-rate10.json"
step "1000 clients, 10 senders, 100 msg/s in total"
"$loadgen" compare --clients 1000 --senders 10 --messages 50 --rate 100 --json "$out/compare-1000-rate100.json"
step "1000 clients, 10 senders, saturating"
"$loadgen" compare --clients 1000 --senders 10 --messages 100 --rate 0 --window 16 --json "$out/compare-1000-saturating.json"

step "fan-out simulation: 20 ms ± 5 ms posts, 1 % 410, 1 % 429"
"$loadgen" fanout --json "$out/fanout.json"
step "fan-out simulation without failures (what pruning costs)"
"$loadgen" fanout --connections 10000,100000 --concurrency 1024 --gone 0 --throttled 0 --json "$out/fanout-no-failures.json"

step "soak: 200 clients churning in 4 rooms for 15 minutes (RSS and fds over time, every acked line in the log)"
"$loadgen" soak --clients 200 --duration-secs 900 --json "$out/soak.json" --svg "$out/soak.svg"

for run in 1 2 3; do
  step "channels (issue #23), run $run: 1000 clients in one room, then each in 5 rooms; subscribe round trips"
  "$loadgen" channels --json "$out/channels-$run.json"
done
step "channels: the subscribes one at a time"
"$loadgen" channels --subscribe-concurrency 1 --json "$out/channels-subscribe-1.json"

step "flood (issue #24): 50 users' delivery p99 without and with one flooding client, default per-user limits"
"$loadgen" flood --json "$out/flood.json"

step "cost model"
"$loadgen" cost --json "$out/cost.json"

step "criterion: hot paths"
cargo bench -p chat-core --bench hot_paths

scale
large
