// A worker thread's entry point: loads the module the worker runs (workerData.module, a file:
// URL). Compiled (dist/), that module is JavaScript and plain node loads it. From the sources
// it is a .ts file, and Node 20 does not carry the parent's `--import tsx` loader into worker
// threads, so tsx is registered here first (the worker inherits the parent's execArgv, so
// `--conditions=keyshard-source` still resolves workspace packages to their sources).
import { workerData } from 'node:worker_threads';

if (workerData.module.endsWith('.ts')) {
  const { register } = await import('tsx/esm/api');
  register();
}
await import(workerData.module);
