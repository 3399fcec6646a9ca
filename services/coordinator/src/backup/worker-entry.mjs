// A worker thread's entry point. Node 20 does not carry the parent's `--import tsx` loader
// into worker threads, so register it here, then load the TypeScript module the worker runs
// (workerData.module, a file: URL).
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.module);
