#!/usr/bin/env bash
# Cross-builds every Lambda binary for arm64 (provided.al2023) with cargo-lambda,
# installing what that needs first (idempotently), and prints the binaries' sizes.
#
#   infra/build-lambdas.sh            # -> $CARGO_TARGET_DIR/lambda/<name>/bootstrap
#
# `sam build -t infra/template.yaml` runs the same cargo-lambda build per function.
# CARGO_TARGET_DIR defaults to ./target; LAMBDA_PROFILE to `release` (run-all.sh
# checks with `ci-arm64`: the same code without LTO); any extra arguments go to
# `cargo lambda build`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo-lambda (PyPI, bundles zig) and the aarch64 std"
if ! command -v cargo-lambda >/dev/null 2>&1; then
  python3 -m pip install --quiet cargo-lambda
fi
cargo lambda --version
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

profile=${LAMBDA_PROFILE:-release}
step "cargo lambda build --profile $profile --arm64"
start=$(date +%s)
cargo lambda build --profile "$profile" --arm64 --package chat-lambdas "$@"
echo "built in $(( $(date +%s) - start )) s"

step "binaries"
target_dir=${CARGO_TARGET_DIR:-target}
status=0
for source in functions/lambdas/src/bin/*.rs; do
  name=$(basename "$source" .rs)
  binary="$target_dir/lambda/$name/bootstrap"
  if [ ! -f "$binary" ]; then
    echo "missing: $binary" >&2
    status=1
    continue
  fi
  # ELF e_machine (bytes 18-19) is 0xb7 for aarch64.
  [ "$(od -An -tx1 -j18 -N2 "$binary" | tr -d ' \n')" = "b700" ] || { echo "not an arm64 binary: $binary" >&2; status=1; }
  printf '%-14s %6s KiB  %s\n' "$name" "$(( $(stat -c %s "$binary") / 1024 ))" "$binary"
done
exit "$status"
