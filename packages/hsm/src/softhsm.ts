/**
 * SoftHSM2 token provisioning for tests and local development clusters.
 *
 * Invariants:
 * - Each token lives in its own directory (`<dir>/tokens`) described by `<dir>/softhsm2.conf`;
 *   the process that later loads the PKCS#11 module must have `SOFTHSM2_CONF` pointing at that
 *   file BEFORE the module is loaded (SoftHSM reads it once, in C_Initialize).
 * - PINs are passed to `softhsm2-util` only as arguments of an execFile call with an explicit
 *   environment; they never appear in logs or in the messages of thrown errors (Node's execFile
 *   error message echoes the command line, so it is never surfaced or attached as a cause).
 * - Idempotent: a token with the same label already present in `<dir>` is left untouched.
 *
 * Production custodians use a real HSM through the same PKCS#11 interface (PKCS#11 v2.40);
 * nothing here is used on that path.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { KeyshardError } from '@keyshard/errors';

const execFileAsync = promisify(execFile);

/** Debian's SoftHSM2 2.6.1 PKCS#11 module. */
export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

export interface SoftHsmTokenSpec {
  /** Directory that will hold `softhsm2.conf` and `tokens/`; created if missing. */
  dir: string;
  /** Token label (PKCS#11 CK_TOKEN_INFO.label: at most 32 bytes). */
  label: string;
  /** User PIN (SoftHSM accepts 4..255 bytes). */
  pin: string;
  /** Security-officer PIN (SoftHSM accepts 4..255 bytes). */
  soPin: string;
}

const SOFTHSM_UTIL = 'softhsm2-util';

function checkPin(name: string, pin: string): void {
  const len = Buffer.byteLength(pin, 'utf8');
  if (len < 4 || len > 255) {
    throw new KeyshardError('INVALID_ARGUMENT', `${name} must be 4..255 bytes long`);
  }
}

function checkLabel(label: string): void {
  const len = Buffer.byteLength(label, 'utf8');
  if (len < 1 || len > 32 || /[\u0000-\u001f\u007f]/.test(label) || label.trim() !== label) {
    throw new KeyshardError(
      'INVALID_ARGUMENT',
      'token label must be 1..32 bytes, without control characters or surrounding spaces',
    );
  }
}

/** Replace any occurrence of the secrets in tool output before it may reach a message. */
function scrub(text: string, secrets: string[]): string {
  let out = text;
  for (const s of secrets) if (s.length > 0) out = out.split(s).join('***');
  return out.trim().slice(0, 500);
}

async function runUtil(args: string[], env: NodeJS.ProcessEnv, secrets: string[], what: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(SOFTHSM_UTIL, args, { env, timeout: 60_000, maxBuffer: 4 << 20 });
    return stdout;
  } catch (e) {
    // Never attach `e` as cause: its message contains the full command line, PINs included.
    const err = e as { code?: unknown; stderr?: unknown; stdout?: unknown };
    if (err.code === 'ENOENT') {
      throw new KeyshardError('FAILED_PRECONDITION', `${SOFTHSM_UTIL} is not installed (package softhsm2)`);
    }
    const detail = scrub(`${String(err.stderr ?? '')} ${String(err.stdout ?? '')}`, secrets);
    throw new KeyshardError('INTERNAL', `${SOFTHSM_UTIL} failed to ${what}${detail ? `: ${detail}` : ''}`);
  }
}

/** Token labels initialised in the token directory the conf points at (parsed from `--show-slots`). */
async function existingLabels(env: NodeJS.ProcessEnv): Promise<string[]> {
  const out = await runUtil(['--show-slots'], env, [], 'list slots');
  const labels: string[] = [];
  let initialized = false;
  for (const line of out.split('\n')) {
    const m = /^\s*Initialized:\s*(yes|no)\s*$/i.exec(line);
    if (m) initialized = m[1]!.toLowerCase() === 'yes';
    const l = /^\s*Label:\s*(.*?)\s*$/.exec(line);
    if (l && initialized) labels.push(l[1]!);
  }
  return labels;
}

/**
 * Creates (once) a SoftHSM2 token with `label` in a private token directory under `dir`.
 * Returns the conf path to export as `SOFTHSM2_CONF` and the token directory.
 */
export async function initSoftHsmToken(spec: SoftHsmTokenSpec): Promise<{ confPath: string; tokenDir: string }> {
  checkLabel(spec.label);
  checkPin('pin', spec.pin);
  checkPin('soPin', spec.soPin);
  if (!spec.dir) throw new KeyshardError('INVALID_ARGUMENT', 'dir is required');

  const dir = path.resolve(spec.dir);
  const tokenDir = path.join(dir, 'tokens');
  const confPath = path.join(dir, 'softhsm2.conf');
  await mkdir(tokenDir, { recursive: true, mode: 0o700 });
  const conf = [
    '# written by @keyshard/hsm initSoftHsmToken',
    `directories.tokendir = ${tokenDir}`,
    'objectstore.backend = file',
    'log.level = ERROR',
    'slots.removable = false',
    '',
  ].join('\n');
  await writeFile(confPath, conf, { mode: 0o600 });

  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    SOFTHSM2_CONF: confPath,
  };
  if ((await existingLabels(env)).includes(spec.label)) return { confPath, tokenDir };

  await runUtil(
    ['--init-token', '--free', '--label', spec.label, '--pin', spec.pin, '--so-pin', spec.soPin],
    env,
    [spec.pin, spec.soPin],
    'initialise the token',
  );
  return { confPath, tokenDir };
}
