#!/usr/bin/env bash
# The one test command: fetches the test models, then runs every test in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch-models.sh >/dev/null
cargo test --release
