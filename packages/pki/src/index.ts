/**
 * Development PKI made with the system `openssl` (no hand-written ASN.1): one CA, and one
 * certificate per component or client principal. The certificate's common name is the
 * principal keyshard authorises. Keys are ECDSA P-256, files mode 0600. Production
 * deployments bring their own CA and follow the same profiles (deploy/README.md).
 *
 * Profiles (extendedKeyUsage, RFC 5280 §4.2.1.12) decide what a certificate may do:
 *   client     clientAuth only: principals (admin, app, auditor, custodian operators). TLS
 *              stacks refuse it as a server certificate, and keyshard clients check it too
 *              (@keyshard/rpc server-identity.ts): a stolen client key can never pose as a server;
 *   server     serverAuth only: a component nobody authenticates as (etcd: its peers talk plain
 *              HTTP on loopback in dev, and it calls nothing);
 *   component  serverAuth + clientAuth: components that serve and call others (coordinators,
 *              custodians, the audit sink, which also probes its own health).
 * Server-capable certificates name 127.0.0.1/localhost (what dev dials) and `DNS:<cn>`, so a
 * client in any language can pin a server by name (gRPC's ssl_target_name_override = its CN).
 * An existing certificate whose profile differs (made before profiles) is issued again.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
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

export type CertProfile = 'client' | 'server' | 'component';

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const EKU: Record<CertProfile, string[]> = { client: ['clientAuth'], server: ['serverAuth'], component: ['serverAuth', 'clientAuth'] };
const EKU_OIDS: Record<CertProfile, string[]> = { client: [CLIENT_AUTH], server: [SERVER_AUTH], component: [SERVER_AUTH, CLIENT_AUTH] };
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

function subjectAltNames(profile: CertProfile, cn: string): string[] {
  if (profile === 'client') return [];
  return ['IP:127.0.0.1', 'DNS:localhost', ...(DNS_LABEL.test(cn) && cn !== 'localhost' ? [`DNS:${cn}`] : [])];
}

/** Whether the certificate in `file` was issued with `profile` for `cn` (else it is issued again). */
function hasProfile(file: string, profile: CertProfile, cn: string): boolean {
  try {
    const x = new X509Certificate(readFileSync(file));
    const eku = [...(x.keyUsage ?? [])].sort();
    const sans = (x.subjectAltName ?? '').split(', ').filter(Boolean).map((s) => s.replace('IP Address:', 'IP:'));
    return JSON.stringify(eku) === JSON.stringify([...EKU_OIDS[profile]].sort()) && JSON.stringify(sans) === JSON.stringify(subjectAltNames(profile, cn)) && x.subject === `CN=${cn}`;
  } catch {
    return false;
  }
}

/**
 * Issues `<dir>/<name>.pem` + `<dir>/<name>-key.pem` with CN = `cn` and the given profile,
 * unless a certificate with that CN and profile is already there. The default profile,
 * `component`, is what every certificate was before profiles; principals get `client`.
 */
export async function issueCert(dir: string, name: string, cn: string = name, profile: CertProfile = 'component'): Promise<CertFiles> {
  const ca = await ensureCa(dir);
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}-key.pem`);
  if (existsSync(cert) && existsSync(key) && hasProfile(cert, profile, cn)) return { ca, cert, key };
  if (!/^[\w.:-]{1,64}$/.test(cn)) throw new Error(`invalid certificate common name ${JSON.stringify(cn)}`);
  const ext = path.join(dir, `${name}.ext`);
  const sans = subjectAltNames(profile, cn);
  writeFileSync(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyAgreement',
      `extendedKeyUsage=critical,${EKU[profile].join(',')}`,
      ...(sans.length ? [`subjectAltName=${sans.join(',')}`] : []),
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
