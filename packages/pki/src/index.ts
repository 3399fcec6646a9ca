/**
 * Development PKI made with the system `openssl` (no hand-written ASN.1): one CA, and one
 * certificate per component or client principal. The certificate's common name is the
 * principal keyshard authorises. Every certificate is valid for both TLS server and client
 * auth and names 127.0.0.1/localhost, since in dev every component both serves and calls.
 * Keys are ECDSA P-256, files mode 0600. Production deployments bring their own CA.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CertFiles {
  ca: string;
  cert: string;
  key: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (e) {
    throw new Error(`openssl ${args[0]} failed: ${(e as { stderr?: string }).stderr?.trim() ?? (e as Error).message}`);
  }
}

/** Creates `<dir>/ca.pem` and `<dir>/ca-key.pem` unless they exist. Returns the CA path. */
export async function ensureCa(dir: string, subject = 'keyshard dev CA'): Promise<string> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = path.join(dir, 'ca.pem');
  if (existsSync(ca)) return ca;
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca-key.pem'], dir);
  chmodSync(path.join(dir, 'ca-key.pem'), 0o600);
  await openssl(
    ['req', '-x509', '-new', '-key', 'ca-key.pem', '-sha256', '-days', '3650', '-subj', `/CN=${subject}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', 'ca.pem'],
    dir,
  );
  return ca;
}

/** Issues `<dir>/<name>.pem` + `<dir>/<name>-key.pem` with CN = `cn`, unless present. */
export async function issueCert(dir: string, name: string, cn: string = name): Promise<CertFiles> {
  const ca = await ensureCa(dir);
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}-key.pem`);
  if (existsSync(cert) && existsSync(key)) return { ca, cert, key };
  if (!/^[\w.:-]{1,64}$/.test(cn)) throw new Error(`invalid certificate common name ${JSON.stringify(cn)}`);
  const ext = path.join(dir, `${name}.ext`);
  writeFileSync(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyAgreement',
      'extendedKeyUsage=serverAuth,clientAuth',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '',
    ].join('\n'),
  );
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], dir);
  chmodSync(key, 0o600);
  await openssl(['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', `${name}.csr`], dir);
  await openssl(
    ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial',
      '-days', '825', '-sha256', '-extfile', ext, '-out', cert],
    dir,
  );
  return { ca, cert, key };
}
