/**
 * Test-only helper of the *.vectors.spec.ts files: reads one frozen vector file of this package
 * (../vectors/<name>, made by ../vectors/generate.py; see ../VECTORS.md). Not exported from the
 * package index.
 */
import { readFileSync } from 'node:fs';

export function loadVectors<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`../vectors/${name}`, import.meta.url), 'utf8')) as T;
}
