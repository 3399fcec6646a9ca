/**
 * Test-only: a throwaway CA, one server certificate and client certificates, made with the
 * openssl CLI in a directory the test owns (and deletes). Keys are P-256, valid for one day.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { TlsMaterial } from '@keyshard/rpc';

export interface TlsPaths {
  ca: string;
  cert: string;
  key: string;
}

export interface TestPki {
  /** File paths for a principal (the server's CN or a client's). */
  files(cn: string): TlsPaths;
  /** Loaded PEM material for a principal. */
  material(cn: string): TlsMaterial;
}

const openssl = (dir: string, args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

export function makeTestPki(dir: string, serverCn: string, clientCns: string[]): TestPki {
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=keyshard-test-ca', '-days', '1']);
  const issue = (cn: string, ext: string) => {
    writeFileSync(path.join(dir, `${cn}.ext`), ext);
    openssl(dir, ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', `${cn}.key`, '-out', `${cn}.csr`, '-subj', `/CN=${cn}`]);
    openssl(dir, ['x509', '-req', '-in', `${cn}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
      '-out', `${cn}.crt`, '-days', '1', '-extfile', `${cn}.ext`]);
  };
  issue(serverCn, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  for (const cn of clientCns) issue(cn, 'extendedKeyUsage=clientAuth\n');
  const files = (cn: string): TlsPaths => ({
    ca: path.join(dir, 'ca.crt'),
    cert: path.join(dir, `${cn}.crt`),
    key: path.join(dir, `${cn}.key`),
  });
  return {
    files,
    material: (cn) => {
      const f = files(cn);
      return { ca: readFileSync(f.ca), cert: readFileSync(f.cert), key: readFileSync(f.key) };
    },
  };
}
