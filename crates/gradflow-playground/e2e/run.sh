#!/usr/bin/env bash
# Build the gradflow binary and run the playground's end-to-end test in
# headless Chromium (Debian's package: apt-get install -y chromium).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "e2e: $chromium not found; install it with: apt-get install -y chromium" >&2
  exit 1
fi
(cd "$root" && cargo build -p gradflow-cli --bin gradflow)
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund
fi
GRADFLOW_BIN="$root/target/debug/gradflow" CHROMIUM="$chromium" \
  timeout 170 node --test --test-reporter=spec playground.test.mjs
