/**
 * A leak scanner for the "no plaintext key material anywhere" property. It does not need to
 * know the secrets: it tries every 32/33-byte window of every candidate byte string as
 *   - a key version's material  (does it decrypt a known ciphertext?),
 *   - a KEK                     (does it unwrap a stored key version?),
 *   - the root key              (does it unwrap the stored KEK?),
 *   - a Shamir share            (does it match a commitment in the share manifest?),
 * and searches for known plaintexts raw, in base64 and in hex. Candidates are each file's raw
 * bytes (files up to 256 KiB) and every base64 / hex run decoded from any file.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import {
  decryptWithVersion, parseCiphertext, shareCommitment, unwrapKek, unwrapVersion, type ShareManifest,
} from '@keyshard/crypto';

export interface Probes {
  clusterId: string;
  plaintexts: Buffer[];
  ciphertexts: { blob: Buffer; context: Record<string, string> }[];
  wrappedKek: { epoch: number; wrapped: Buffer };
  wrappedVersion: { keyId: string; version: number; wrapped: Buffer };
  manifest: ShareManifest;
}

export interface Finding {
  source: string;
  what: string;
}

const B64_RUN = /[A-Za-z0-9+/_-]{43,}={0,2}/g;
const HEX_RUN = /(?:[0-9a-fA-F]{2}){32,}/g;
const RAW_LIMIT = 256 * 1024;

function candidates(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  if (data.length <= RAW_LIMIT) out.push(data);
  const text = data.toString('latin1');
  for (const m of text.matchAll(B64_RUN)) out.push(Buffer.from(m[0], m[0].includes('-') || m[0].includes('_') ? 'base64url' : 'base64'));
  for (const m of text.matchAll(HEX_RUN)) out.push(Buffer.from(m[0], 'hex'));
  return out;
}

function attempt(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
}

export class LeakScanner {
  #p: Probes;
  #parsed: { parsed: ReturnType<typeof parseCiphertext>; context: Record<string, string> }[];
  #commitments: Set<string>;

  constructor(p: Probes) {
    this.#p = p;
    this.#parsed = p.ciphertexts.map((c) => ({ parsed: parseCiphertext(c.blob), context: c.context }));
    this.#commitments = new Set(p.manifest.custodians.map((c) => c.commitment));
  }

  scanBuffer(source: string, data: Buffer): Finding[] {
    const findings: Finding[] = [];
    for (const pt of this.#p.plaintexts) {
      for (const [enc, needle] of [['raw', pt], ['base64', Buffer.from(pt.toString('base64'))], ['hex', Buffer.from(pt.toString('hex'))]] as const)
        if (data.includes(needle)) findings.push({ source, what: `plaintext (${enc})` });
    }
    const { clusterId, wrappedKek, wrappedVersion } = this.#p;
    for (const c of candidates(data)) {
      for (let i = 0; i + 32 <= c.length; i++) {
        const w = c.subarray(i, i + 32);
        if (w.readBigUInt64BE(0) === 0n && w.readBigUInt64BE(8) === 0n) continue;
        if (this.#parsed.some(({ parsed, context }) => attempt(() => decryptWithVersion(w, parsed, context))))
          findings.push({ source, what: 'key version material' });
        if (attempt(() => unwrapVersion(w, clusterId, wrappedVersion.keyId, wrappedVersion.version, wrappedVersion.wrapped)))
          findings.push({ source, what: 'key-encryption key' });
        if (attempt(() => unwrapKek(w, clusterId, wrappedKek.epoch, wrappedKek.wrapped))) findings.push({ source, what: 'root key' });
        if (i + 33 <= c.length && this.#commitments.has(shareCommitment(clusterId, c.subarray(i, i + 33))))
          findings.push({ source, what: 'Shamir share' });
      }
    }
    return findings;
  }

  scanTree(root: string): { findings: Finding[]; files: number } {
    const findings: Finding[] = [];
    let files = 0;
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile() && statSync(p).size > 0) {
          files++;
          findings.push(...this.scanBuffer(path.relative(root, p), readFileSync(p)));
        }
      }
    };
    walk(root);
    return { findings, files };
  }
}
