#!/usr/bin/env bash
# `npm test`: installs what is missing and builds (ensure-deps.sh runs `npm run build`), type-checks,
# checks the architecture (arch-check.sh), then runs unit tests (specs beside the sources) and
# integration tests (test/*.test.ts, one file at a time: each starts a real cluster).
# `npm test -- unit` or `npm test -- integration` runs one part. Tests run the TypeScript
# sources (`--conditions=keyshard-source`: workspace packages resolve to src/); the services,
# CLI and health probe they start run compiled from dist/, as deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/ensure-deps.sh

part="${1:-all}"
NODE_TEST=(node --conditions=keyshard-source --import tsx --test --test-reporter=spec)

if [ "$part" = all ] || [ "$part" = unit ]; then
  echo "== type check" >&2
  npm run --silent gen:proto
  npx tsc -p tsconfig.json
  bash test/arch-check.sh
  # The frozen vectors are made by independent Python implementations; these fail if a vector
  # file differs from what its generator computes (packages/*/VECTORS.md).
  echo "== frozen vectors match their independent generators" >&2
  python3 packages/crypto/vectors/generate.py --check
  python3 packages/audit-log/vectors/generate.py --check
  python3 services/audit-sink/vectors/generate.py --check
  python3 packages/client/vectors/generate.py --check
  echo "== unit tests" >&2
  mapfile -t specs < <(find packages services -path '*/node_modules' -prune -o -name '*.spec.ts' -print | sort)
  "${NODE_TEST[@]}" "${specs[@]}"
fi
if [ "$part" = all ] || [ "$part" = integration ]; then
  echo "== integration tests (real etcd, SoftHSM, processes)" >&2
  mapfile -t tests < <(find test -maxdepth 1 -name '*.test.ts' | sort)
  "${NODE_TEST[@]}" --test-concurrency=1 "${tests[@]}"
fi
