/**
 * Every flag value the CLI takes is parsed here, strictly: a value that is not exactly what
 * the flag expects is refused (commander prints `option '--flag <v>' argument 'x' is invalid. …`,
 * one line, exit 2), never read leniently (`1d` as 1, `abc` as "none", a fallback default).
 *
 * Durations: a whole number with one unit, `s` `m` `h` `d` (`90s`, `15m`, `24h`, `30d`), or a
 * whole number of seconds (`86400`). Numbers: whole, decimal digits only, within the flag's range.
 */
import { readFileSync } from 'node:fs';
import { createPrivateKey } from 'node:crypto';
import { MIN_RECOVERY_KEY_BITS, parseRecoveryPublicKey, parseTransportPublicKey } from '@keyshard/crypto';
import { InvalidArgumentError } from 'commander';
import { UsageError } from './output.ts';

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86_400 } as const;
/** The longest duration the service takes (100 years, as the coordinator's own bound). */
export const MAX_DURATION_SECONDS = 100 * 365 * 86_400;

export interface Range {
  min?: number;
  max?: number;
}

/** Seconds from `90s`, `15m`, `24h`, `30d` or plain seconds; throws InvalidArgumentError otherwise. */
export function parseDuration(value: string, { min = 1, max = MAX_DURATION_SECONDS }: Range = {}): number {
  const m = /^(\d{1,12})([smhd]?)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`expected a duration like 90s, 15m, 24h, 30d or a number of seconds, got ${JSON.stringify(value)}`);
  const seconds = Number(m[1]) * UNIT_SECONDS[(m[2] || 's') as keyof typeof UNIT_SECONDS];
  if (seconds < min || seconds > max) throw new InvalidArgumentError(`expected a duration from ${describeSeconds(min)} to ${describeSeconds(max)}, got ${value}`);
  return seconds;
}

/** A whole number in [min, max]; throws InvalidArgumentError otherwise. */
export function parseInteger(value: string, { min = 0, max = Number.MAX_SAFE_INTEGER }: Range = {}): number {
  if (!/^-?\d{1,16}$/.test(value.trim())) throw new InvalidArgumentError(`expected a whole number, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `expected a whole number of at least ${min}, got ${value}` : `expected a whole number from ${min} to ${max}, got ${value}`);
  return n;
}

/** Commander parsers: `.option('--ttl <duration>', '…', duration())`. */
export const duration = (range?: Range) => (value: string) => parseDuration(value, range);
export const integer = (range?: Range) => (value: string) => parseInteger(value, range);

/** A repeatable `name=value` flag, collected into a record (a repeated name keeps its last value). */
export const keyValue = (what: string) => (value: string, previous: Record<string, string> = {}) => {
  const i = value.indexOf('=');
  if (i <= 0) throw new InvalidArgumentError(`expected ${what}=value, got ${JSON.stringify(value)}`);
  return { ...previous, [value.slice(0, i)]: value.slice(i + 1) };
};

/**
 * A key policy's operations (keys.proto KeyPolicy): the use operations, then administration
 * (`rotate`; `admin`, which includes it). Cluster admins administer every key and use only
 * what a policy names them for.
 */
export const USE_OPERATIONS = ['encrypt', 'decrypt', 'sign', 'verify', 'mac', 'generate_data_key'] as const;
export const POLICY_OPERATIONS = [...USE_OPERATIONS, 'rotate', 'admin'] as const;

/** One grant `OP=PRINCIPAL[,PRINCIPAL…]` added to `previous`; throws InvalidArgumentError naming what is wrong. */
export function parseGrant(value: string, previous: Record<string, string[]> = {}): Record<string, string[]> {
  const i = value.indexOf('=');
  const op = i > 0 ? value.slice(0, i) : '';
  if (!op) throw new InvalidArgumentError(`expected op=principal[,principal], got ${JSON.stringify(value)}`);
  if (!(POLICY_OPERATIONS as readonly string[]).includes(op)) throw new InvalidArgumentError(`expected one of ${POLICY_OPERATIONS.join(' ')} before =, got ${JSON.stringify(op)}`);
  const principals = value.slice(i + 1).split(',').filter(Boolean);
  return { ...previous, [op]: [...(previous[op] ?? []), ...principals] };
}

/** A repeatable flag, collected into a list. */
export const collect = (value: string, previous: string[] = []) => [...previous, value];

/** An RFC 3339 time with its offset (`2026-12-06T10:00:00Z`), kept as given. */
export function timestamp(value: string): string {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/.test(value) || !Number.isFinite(Date.parse(value)))
    throw new InvalidArgumentError(`expected an RFC 3339 time like 2026-12-06T10:00:00Z, got ${JSON.stringify(value)}`);
  return value;
}

/** One of a fixed set of words. */
export const oneOf = (...allowed: string[]) => (value: string) => {
  if (!allowed.includes(value)) throw new InvalidArgumentError(`expected ${allowed.join(' | ')}, got ${JSON.stringify(value)}`);
  return value;
};

/** `86400` → `1d`, `5400` → `90m`: the largest unit that divides it. */
export function describeSeconds(seconds: number): string {
  for (const [unit, size] of [['d', 86_400], ['h', 3600], ['m', 60]] as const) if (seconds > 0 && seconds % size === 0) return `${seconds / size}${unit}`;
  return `${seconds}s`;
}

/** A ceremony's time to live: custodians sign within it (a ceremony stays open at most 7 days). */
export const ceremonyTtl = duration({ min: 1, max: 7 * 86_400 });

/** A file a flag names, as text: one that cannot be read is a usage error naming the flag (exit 2). */
/**
 * --recovery-public-key FILE: an RSA public key of >= 3072 bits (the check the servers make,
 * parseRecoveryPublicKey), refused here before anything is sent: a private key in its place
 * never leaves this machine. One line naming the flag, never the file's content.
 */
export function readRecoveryPublicKey(flag: string, file: string): string {
  return readPublicKeyFile(flag, file, parseRecoveryPublicKey);
}

/**
 * --transport-public-key FILE: a coordinator's RSA transport public key, 2048..8192 bits (the
 * custodian's check, parseTransportPublicKey), refused here before anything is sent: a private
 * key in its place never leaves this machine. One line naming the flag, never the file's content.
 */
export function readTransportPublicKey(flag: string, file: string): string {
  return readPublicKeyFile(flag, file, parseTransportPublicKey);
}

function readPublicKeyFile(flag: string, file: string, parse: (pem: string) => { publicKeyPem: string }): string {
  const text = readFlagFile(flag, file);
  try {
    return parse(text).publicKeyPem;
  } catch (e) {
    throw new UsageError(`${flag} ${file}: ${(e as Error).message}`);
  }
}

/** --recovery-private-key FILE: the offline RSA private key (>= 3072 bits); a public key in its place is refused. */
export function readRecoveryPrivateKey(flag: string, file: string): string {
  const text = readFlagFile(flag, file);
  let bits = 0;
  let type: string | undefined;
  try {
    const k = createPrivateKey(text);
    type = k.asymmetricKeyType;
    bits = k.asymmetricKeyDetails?.modulusLength ?? 0;
  } catch {
    const what = /PUBLIC KEY/.test(text) ? 'holds a public key: give the RSA private key of the recovery key pair' : 'is not a private key PEM';
    throw new UsageError(`${flag} ${file}: ${what}`);
  }
  if (type !== 'rsa') throw new UsageError(`${flag} ${file}: the recovery key must be an RSA private key (got ${type ?? 'an unknown type'})`);
  if (bits < MIN_RECOVERY_KEY_BITS) throw new UsageError(`${flag} ${file}: the recovery key must be RSA of at least ${MIN_RECOVERY_KEY_BITS} bits (got ${bits})`);
  return text;
}

export function readFlagFile(flag: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`${flag} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
}
