/** Test-only: per-principal TLS files and material from a throwaway dev PKI (`@keyshard/pki`). */
import { readFileSync } from 'node:fs';
import { issueCert, type CertFiles } from '@keyshard/pki';
import type { TlsMaterial } from '@keyshard/rpc';

export interface TestPki {
  files(cn: string): CertFiles;
  material(cn: string): TlsMaterial;
}

export async function makeTestPki(dir: string, serverCn: string, clientCns: string[]): Promise<TestPki> {
  const issued = new Map<string, CertFiles>();
  for (const cn of [serverCn, ...clientCns]) issued.set(cn, await issueCert(dir, cn));
  const files = (cn: string) => {
    const f = issued.get(cn);
    if (!f) throw new Error(`no test certificate for ${cn}`);
    return f;
  };
  return {
    files,
    material: (cn) => {
      const f = files(cn);
      return { ca: readFileSync(f.ca), cert: readFileSync(f.cert), key: readFileSync(f.key) };
    },
  };
}
