#!/usr/bin/env bash
# `npm run dev`: installs what is missing, then runs `keyshard dev` in the foreground.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/ensure-deps.sh
exec node packages/cli/bin/keyshard.js dev "$@"
