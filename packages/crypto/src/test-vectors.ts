/**
 * Test-only helpers of the *.vectors.spec.ts files: reads one frozen vector file of this
 * package (../vectors/<name>, made by ../vectors/generate.py; see ../VECTORS.md). Not exported
 * from the package index.
 */
import { readFileSync } from 'node:fs';

export function loadVectors<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`../vectors/${name}`, import.meta.url), 'utf8')) as T;
}

export const hex = (s: string): Buffer => Buffer.from(s, 'hex');

/** A copy of `b` with bit 0 of byte `at` flipped (negative `at` counts from the end). */
export function flipped(b: Buffer, at: number): Buffer {
  const out = Buffer.from(b);
  out[at < 0 ? out.length + at : at]! ^= 1;
  return out;
}
