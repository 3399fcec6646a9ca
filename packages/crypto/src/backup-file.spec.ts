import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { BackupOpener, BackupParser, BackupWriter, type BackupEntry, type ParsedPart } from './backup-file.ts';
import type { ShareManifest } from './share-manifest.ts';

const manifest = { version: 1, clusterId: 'c-1', threshold: 2, createdAt: '', custodians: [], kcv: '', mac: '' } as ShareManifest;

function write(root: Buffer, entries: BackupEntry[]): Buffer {
  const w = new BackupWriter(root, {
    cluster: 'dev', clusterId: 'c-1', revision: '7', createdAt: new Date().toISOString(), entries: entries.length, manifest, manifestFingerprint: 'f',
  });
  const parts = [w.start()];
  for (const e of entries) {
    const b = w.add(e.key, e.value);
    if (b) parts.push(b);
  }
  parts.push(w.finish());
  return Buffer.concat(parts);
}

/** Reads a file fed in `step`-byte pieces; returns the entries and whether the signature held. */
function read(root: Buffer, file: Buffer, step = 1000): { entries: BackupEntry[]; signatureValid: boolean } {
  const p = new BackupParser();
  let opener: BackupOpener | undefined;
  const entries: BackupEntry[] = [];
  let signatureValid = false;
  const handle = (part: ParsedPart) => {
    if (part.kind === 'header') opener = new BackupOpener(root, part.header, part.aad);
    else if (part.kind === 'frame') entries.push(...opener!.open(part));
    else signatureValid = part.signatureValid;
  };
  for (let i = 0; i < file.length; i += step) for (const part of p.push(file.subarray(i, i + step))) handle(part);
  p.end();
  return { entries, signatureValid };
}

const sample = (n: number): BackupEntry[] => Array.from({ length: n }, (_, i) => ({ key: `keys/k${i}`, value: randomBytes(200 + (i % 50)) }));

test('a backup round-trips in many chunks, fed in arbitrary pieces, and its signature verifies', () => {
  const root = randomBytes(32);
  const entries = sample(2000); // ~450 KiB: several chunks
  const file = write(root, entries);
  for (const step of [1, 777, 65_536, file.length]) {
    if (step === 1 && file.length > 100_000) continue; // byte at a time only on small files
    const out = read(root, file, step);
    assert.equal(out.signatureValid, true);
    assert.deepEqual(out.entries.map((e) => e.key), entries.map((e) => e.key));
    assert.ok(out.entries.every((e, i) => e.value.equals(entries[i]!.value)));
  }
  assert.equal(read(root, write(root, []), 3).entries.length, 0, 'an empty backup is valid');
  assert.equal(read(root, write(root, sample(3)), 1).signatureValid, true);
});

test('no entry value appears in the file in the clear', () => {
  const root = randomBytes(32);
  const entries = sample(50);
  const file = write(root, entries);
  for (const e of entries) assert.equal(file.includes(e.value.subarray(0, 32)), false);
});

test('modified, cut, reordered or extended files are refused; another root is refused', () => {
  const root = randomBytes(32);
  const file = write(root, sample(1500));
  const headerEnd = 12 + file.readUInt32BE(8);
  const flipped = Buffer.from(file);
  flipped[headerEnd + 100]! ^= 1;
  assert.throws(() => read(root, flipped), /failed authentication/);
  // The header is bound: editing it breaks every chunk's AAD and the signature.
  const header = Buffer.from(file);
  header[headerEnd - 3]! ^= 1;
  assert.throws(() => read(root, header), /not a valid keyshard backup|failed authentication/);
  // Cut after the first chunk: there is no trailer.
  const firstLen = file.readUInt32BE(headerEnd);
  assert.throws(() => read(root, file.subarray(0, headerEnd + 4 + firstLen)), /truncated/);
  // Cut anywhere: refused.
  assert.throws(() => read(root, file.subarray(0, file.length - 10)), /truncated/);
  // Appended bytes: refused.
  assert.throws(() => read(root, Buffer.concat([file, Buffer.from('x')])), /after the signature/);
  // Swap the first two chunks: nonces carry the position.
  const c0 = file.subarray(headerEnd, headerEnd + 4 + firstLen);
  const secondLen = file.readUInt32BE(headerEnd + 4 + firstLen);
  const c1 = file.subarray(headerEnd + 4 + firstLen, headerEnd + 8 + firstLen + secondLen);
  const swapped = Buffer.concat([file.subarray(0, headerEnd), c1, c0, file.subarray(headerEnd + c0.length + c1.length)]);
  assert.throws(() => read(root, swapped), /failed authentication/);
  // A signature byte flipped: structure fine, signature not.
  const sig = Buffer.from(file);
  sig[sig.length - 1]! ^= 1;
  assert.equal(read(root, sig).signatureValid, false);
  assert.throws(() => read(randomBytes(32), file), /not signed by this root key/);
});

test('writeBackupFile never writes through a file or symlink planted beside the output; the file is 0600', async () => {
  // The attack: in a shared directory another user plants `<out>.partial` -> a file the operator
  // may write, hoping the backup overwrites it (the name the writer used before).
  const { mkdtempSync, writeFileSync, readFileSync, symlinkSync, lstatSync, statSync, readdirSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const path = (await import('node:path')).default;
  const { writeBackupFile } = await import('./backup-file.ts');
  const dir = mkdtempSync(path.join(tmpdir(), 'backup-file-'));
  try {
    writeFileSync(path.join(dir, 'victim'), 'untouched', { mode: 0o644 });
    symlinkSync(path.join(dir, 'victim'), path.join(dir, 'out.ksb.partial'));
    await writeBackupFile(path.join(dir, 'out.ksb'), (async function* () { yield Buffer.from('backup bytes'); })());
    assert.equal(readFileSync(path.join(dir, 'victim'), 'utf8'), 'untouched');
    assert.ok(lstatSync(path.join(dir, 'out.ksb.partial')).isSymbolicLink());
    assert.equal(readFileSync(path.join(dir, 'out.ksb'), 'utf8'), 'backup bytes');
    assert.equal(statSync(path.join(dir, 'out.ksb')).mode & 0o777, 0o600);
    // A failing source leaves nothing behind.
    await assert.rejects(writeBackupFile(path.join(dir, 'failed.ksb'), (async function* () { yield Buffer.from('x'); throw new Error('source failed'); })()), /source failed/);
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('failed')), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
