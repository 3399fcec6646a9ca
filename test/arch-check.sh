#!/usr/bin/env bash
# The architecture check (issue 15), run by `npm test` after the type check, and by
# `npm run check:arch` on its own. It fails when:
#   (a) TypeScript files under packages/ or services/ import each other in a cycle (madge; its
#       config, .madgerc, resolves @keyshard/* imports to their sources through the
#       "keyshard-source" export condition, so cycles across packages count too, and skips dist/
#       and the types generated from proto/: type-only, and protobuf's own descriptor messages
#       refer to themselves);
#   (b) a file under packages/ imports a service: a @keyshard/<service> package (audit-sink,
#       coordinator, custodian) or a path into services/, or a package declares one as a
#       dependency. Services are built from packages, never the other way round; starting a
#       service as a process (devcluster) is not an import;
#   (c) a block of 6 or more lines is repeated inside services/coordinator/src (jscpd,
#       threshold 0 %): shared code gets one home instead of a copy;
#   (d) a workspace's tsconfig.build.json does not reference exactly the workspaces its
#       package.json depends on (dependencies, not devDependencies), or the root
#       tsconfig.build.json misses a workspace: `npm run build` (tsc -b) builds in the order
#       these references give, so a missing one builds a package before what it imports.
# Every check runs and prints what it found; the script exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
SERVICES='audit-sink|coordinator|custodian'

echo "== architecture (a): import cycles in packages/ and services/ (madge)" >&2
npx --no-install madge --circular --no-spinner --warning packages services || failed+=('(a) import cycle')

echo "== architecture (b): no package imports a service" >&2
import_of_service="(\\bfrom|\\bimport)[[:space:]]*\\(?[[:space:]]*['\"](@keyshard/($SERVICES)([/'\"]|$)|[^'\"]*\\.\\./services/)"
if grep -rnE --include='*.ts' --include='*.js' --include='*.mjs' --exclude-dir=node_modules --exclude-dir=dist "$import_of_service" packages; then
  failed+=('(b) a package imports a service')
fi
if grep -nE "\"@keyshard/($SERVICES)\"[[:space:]]*:" packages/*/package.json; then
  failed+=('(b) a package depends on a service')
fi

echo "== architecture (c): no repeated block of 6+ lines in services/coordinator/src (jscpd)" >&2
npx --no-install jscpd --min-lines 6 --threshold 0 --exit-code 1 --fail-on-empty services/coordinator/src || failed+=('(c) copied code in the coordinator')

echo "== architecture (d): each workspace's build references the workspaces it depends on" >&2
node test/check-build-references.mjs || failed+=('(d) build references')

if [ ${#failed[@]} -gt 0 ]; then
  printf 'architecture check failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "architecture check passed" >&2
