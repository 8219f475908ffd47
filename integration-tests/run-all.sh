#!/usr/bin/env bash
# Every check the project has, from a fresh machine: installs what the tests need
# (idempotently), then runs formatting, lints and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's duration is printed at the end (also when a step fails), so a slow
# CI run says where its time went.
timings=()
step_name="" step_start=$SECONDS
end_step() { [ -z "$step_name" ] || timings+=("$(printf '%5d s  %s' $((SECONDS - step_start)) "$step_name")"); }
step() { end_step; step_name="$*" step_start=$SECONDS; printf '\n==> %s\n' "$*"; }
report_timings() { end_step; step_name=""; printf '\n==> step durations (total %d s)\n' "$SECONDS"; printf '%s\n' "${timings[@]}"; }
trap report_timings EXIT

step "toolchain components"
for component in rustfmt clippy; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done

step "Chromium (apt) for the browser test"
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@"
}
command -v chromium >/dev/null 2>&1 || apt_install chromium
chromium --version

step "wscat, playwright-core and axe-core (npm) for the terminal and browser tests"
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
tools=integration-tests/.tools
if [ ! -x "$tools/node_modules/.bin/wscat" ] || [ ! -d "$tools/node_modules/playwright-core" ] \
  || [ ! -f "$tools/node_modules/axe-core/axe.min.js" ]; then
  # One install for all: a second `npm install --no-save` would prune the first.
  npm install --prefix "$tools" --no-audit --no-fund --no-save wscat@6 playwright-core@1.64 axe-core@4
fi
"$tools/node_modules/.bin/wscat" --version

step "moto (pip, in a virtualenv) for the DynamoDB-endpoint tests"
venv=integration-tests/.tools/venv
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5,<6"
fi
"$venv/bin/python" -c 'import moto; print("moto", moto.__version__)'

step "cfn-lint and the SAM CLI (PyPI) for the template checks"
pip_install() {
  python3 -m pip install --quiet "$@" || python3 -m pip install --quiet --break-system-packages "$@"
  hash -r
}
command -v python3 >/dev/null 2>&1 || { echo "python3 is required for cfn-lint and the SAM CLI" >&2; exit 1; }
if ! command -v cfn-lint >/dev/null 2>&1 || ! command -v sam >/dev/null 2>&1; then
  pip_install cfn-lint aws-sam-cli
fi
cfn-lint --version
sam --version

step "cargo-lambda (PyPI, bundles zig) and the aarch64 std for the arm64 build"
command -v cargo-lambda >/dev/null 2>&1 || pip_install cargo-lambda
cargo lambda --version
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

# Tests only ever talk to loopback with fake credentials.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export CARGO_TERM_COLOR=never
if [ "${CI:-}" = "true" ]; then
  export CARGO_PROFILE_DEV_DEBUG=0
fi

step "cargo fmt --check"
cargo fmt --all -- --check

# Template checks never reach AWS: in a network namespace of their own when the
# machine allows one, and with fake credentials and no telemetry either way.
offline() { if unshare -n true 2>/dev/null; then unshare -n "$@"; else "$@"; fi; }
step "cfn-lint infra/template.yaml"
offline cfn-lint infra/template.yaml
step "sam validate --lint"
SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 offline sam validate --lint --template infra/template.yaml

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
# Every test binary runs even after a failure, so one CI run reports all of them.
cargo test --workspace --no-fail-fast

# The deployable artifacts: all Lambda binaries cross-built for arm64 (~3 min cold
# on 2 cores, seconds when warm). Its own target dir keeps the release cross build
# from waiting on, or evicting, the test build's.
step "arm64 Lambda build"
# It checks with the `ci-arm64` profile (unoptimized, no LTO, parallel codegen;
# Cargo.toml): the release profile's fat LTO took 13.5 of CI's 29 minutes.
CARGO_TARGET_DIR="${LAMBDA_TARGET_DIR:-$PWD/target/lambda-arm64}" LAMBDA_PROFILE="${LAMBDA_PROFILE:-ci-arm64}" \
  bash infra/build-lambdas.sh
