/**
 * Test-only: per-principal TLS files and material from a throwaway dev PKI. Exported as
 * `@keyshard/pki/testing`, never from the package index, and used by specs only: it issues
 * every certificate with the `component` profile under one CA in `dir`.
 */
import { readFileSync } from 'node:fs';
import { issueCert, type CertFiles } from './index.ts';

/** The PEM bytes a TLS endpoint is configured with (the shape of @keyshard/rpc TlsMaterial). */
export interface TestTlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface TestPki {
  files(cn: string): CertFiles;
  material(cn: string): TestTlsMaterial;
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
