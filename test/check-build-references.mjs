#!/usr/bin/env node
/**
 * Checks that `npm run build` (tsc -b packages/tsconfig.build.json) builds every workspace after the
 * workspaces it imports: each packages/* and services/* tsconfig.build.json must reference
 * exactly the workspaces its package.json lists under dependencies (devDependencies are for
 * specs, which the build leaves out), and packages/tsconfig.build.json every workspace. tsc -b
 * orders projects by these references alone: a missing one builds a package against an old or
 * absent dist/ of what it imports. Run first by `npm run build`, and by test/arch-check.sh (d).
 * Prints what to add or remove; exits 1 if anything is wrong.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

process.chdir(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..'));
const read = (file) => {
  const r = ts.readConfigFile(file, ts.sys.readFile); // tsconfig files may hold comments
  if (r.error) throw new Error(`${file}: ${ts.flattenDiagnosticMessageText(r.error.messageText, ' ')}`);
  return r.config;
};
const refs = (file) => (read(file).references ?? []).map((r) => path.normalize(path.join(path.dirname(file), path.dirname(r.path)))).sort();
const workspaces = ['packages', 'services'].flatMap((g) => readdirSync(g).map((n) => path.join(g, n))).filter((d) => existsSync(path.join(d, 'package.json')));
const dirOf = new Map(workspaces.map((d) => [JSON.parse(readFileSync(path.join(d, 'package.json'), 'utf8')).name, d]));
const problems = [];
for (const d of workspaces) {
  const file = path.join(d, 'tsconfig.build.json');
  if (!existsSync(file)) {
    problems.push(`${d}: no tsconfig.build.json`);
    continue;
  }
  const deps = Object.keys(JSON.parse(readFileSync(path.join(d, 'package.json'), 'utf8')).dependencies ?? {});
  const want = deps.filter((n) => dirOf.has(n)).map((n) => dirOf.get(n)).sort();
  const have = refs(file);
  for (const w of want) if (!have.includes(w)) problems.push(`${file}: add { "path": "${path.relative(d, w)}/tsconfig.build.json" } (its package.json depends on it)`);
  for (const h of have) if (!want.includes(h)) problems.push(`${file}: references ${h}, which its package.json does not depend on`);
}
const root = refs('packages/tsconfig.build.json');
for (const d of workspaces) if (!root.includes(d)) problems.push(`packages/tsconfig.build.json: add { "path": "${path.relative('packages', d)}/tsconfig.build.json" }`);
for (const p of problems) console.error(p);
process.exit(problems.length ? 1 : 0);
