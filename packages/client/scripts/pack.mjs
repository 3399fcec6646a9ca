// `npm pack` / `npm publish` of @keyshard/client (prepack: `prepare`, postpack: `clean`).
//
// The SDK uses two workspace packages that are not published, @keyshard/rpc (proto loading,
// mutual TLS, pinned server identity) and @keyshard/errors. They ship inside the tarball as
// `bundleDependencies`, compiled, with the .proto files, so that the tarball installs into any
// project from the registry's @grpc/* packages alone. npm bundles only dependencies found in the
// package's own node_modules, and in a workspace they are hoisted to the root (npm/cli#3466), so
// `prepare` links each bundled package into packages/client/node_modules for the duration of the
// pack (the links resolve to the same directories as the hoisted ones) and `clean` removes them.
//
// prepare: generates the proto types if the repository has that step, compiles the client and
// what it references (tsc -b tsconfig.build.json: dist/ with .d.ts), copies proto/ into
// @keyshard/rpc's dist/proto (where its loader looks when no repository is around it), then links the bundled packages.
import { cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, rmdirSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = path.dirname(path.dirname(fileURLToPath(import.meta.url))); // packages/client
const root = path.resolve(here, '../..');
const pkg = JSON.parse(readFileSync(path.join(here, 'package.json'), 'utf8'));
const bundled = pkg.bundleDependencies ?? [];

/** The workspace directory of a bundled package, through the root's node_modules link. */
function workspaceDir(name) {
  const link = path.join(root, 'node_modules', name);
  if (!existsSync(link)) throw new Error(`${name} is not installed in ${root}/node_modules: run npm install at the repository root`);
  return realpathSync(link);
}

function run(cmd, args, cwd) {
  execFileSync(cmd, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] });
}

function prepare() {
  const rootPkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  if (rootPkg.scripts?.['gen:proto']) run('npm', ['run', '--silent', 'gen:proto'], root);
  const tsc = createRequire(path.join(root, 'package.json')).resolve('typescript/bin/tsc');
  run(process.execPath, [tsc, '-b', path.join(here, 'tsconfig.build.json')], here);

  const rpc = workspaceDir('@keyshard/rpc');
  const protoCopy = path.join(rpc, 'dist', 'proto');
  rmSync(protoCopy, { recursive: true, force: true });
  cpSync(path.join(root, 'proto'), protoCopy, { recursive: true, filter: (src) => !src.endsWith('/node_modules') });

  for (const name of bundled) {
    const target = workspaceDir(name);
    if (!existsSync(path.join(target, 'dist', 'index.js'))) throw new Error(`${name} has no dist/index.js after the build`);
    const link = path.join(here, 'node_modules', name);
    mkdirSync(path.dirname(link), { recursive: true });
    rmSync(link, { recursive: true, force: true });
    symlinkSync(path.relative(path.dirname(link), target), link, 'dir');
  }
}

/**
 * Removes the links prepare made (only symlinks), the directories they leave empty, and the
 * proto copy in rpc's dist/ (inside the repository the services read proto/ itself).
 */
function clean() {
  rmSync(path.join(workspaceDir('@keyshard/rpc'), 'dist', 'proto'), { recursive: true, force: true });
  for (const name of bundled) {
    const link = path.join(here, 'node_modules', name);
    try {
      if (lstatSync(link).isSymbolicLink()) rmSync(link);
    } catch {
      // not there
    }
    for (let dir = path.dirname(link); dir.startsWith(path.join(here, 'node_modules')); dir = path.dirname(dir)) {
      if (!existsSync(dir) || readdirSync(dir).length > 0) break;
      rmdirSync(dir);
    }
  }
}

const step = process.argv[2];
if (step === 'prepare') {
  clean();
  prepare();
} else if (step === 'clean') clean();
else throw new Error('usage: node scripts/pack.mjs prepare|clean');
