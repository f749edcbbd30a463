#!/usr/bin/env bash
# Browser tests: the dashboard and the viewer in headless Chromium against a real `terrane run`
# (tests/browser). Builds or reuses the debug `terrane` binary (CARGO_TARGET_DIR is respected),
# installs the locked npm packages, runs the tests; each test starts and stops its own grid on
# free ports. Screenshots land in tests/browser/artifacts (or $ARTIFACTS_DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
  echo "browser tests: /usr/bin/chromium is missing (scripts/services/chromium.sh installs Debian's chromium)" >&2
  exit 1
fi

cargo build -q -p terrane
target_dir="$(cargo metadata --format-version 1 --no-deps \
  | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
export TERRANE_BIN="$target_dir/debug/terrane"

cd tests/browser
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund
fi
npm test
