/**
 * Sensitive audit fields are stored as HMAC-SHA256 under a key of the sink, never as given:
 * the log can then be shown to auditors without revealing, say, a tenant name inside an
 * encryption context, while an operator holding the key (or allowed to call HashValue) can
 * still find every record with a given value (`keyshard audit hash <value>`).
 *
 * Which values: every detail whose key starts with `sensitive.` (the producer marks them,
 * e.g. encryption-context entries it wants audited but not revealed), plus the detail keys and
 * top-level event fields listed in the sink's config. A plain hash would not do: values like
 * tenant ids are guessable, and anyone with the log could test guesses offline.
 */
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const HMAC_PREFIX = 'hmac-sha256:';
export const MARKED_PREFIX = 'sensitive.';

export function hmacValue(key: Uint8Array, value: string): string {
  return HMAC_PREFIX + createHmac('sha256', key).update(value, 'utf8').digest('hex');
}

/** Reads the 32-byte key (hex) from its file, generating it (0600) if the file does not exist. */
export function loadHmacKey(file: string): Buffer {
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  }
  const key = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'hex');
  if (key.length < 32) throw new Error(`${file} must hold a key of at least 32 bytes, hex-encoded`);
  return key;
}

export interface SensitiveConfig {
  /** Top-level event fields (e.g. request_id) stored as HMACs. */
  fields?: readonly string[];
  /** Detail keys stored as HMACs, in addition to every `sensitive.*` key. */
  details?: readonly string[];
}

/** The fields that identify and order an event can never be hidden. */
const NEVER_HIDDEN = new Set(['id', 'time', 'source', 'operation', 'result', 'details']);

export class SensitiveFields {
  private readonly fields: string[];
  private readonly details: Set<string>;

  constructor(
    private readonly key: Uint8Array,
    cfg: SensitiveConfig = {},
  ) {
    const bad = (cfg.fields ?? []).filter((f) => NEVER_HIDDEN.has(f));
    if (bad.length) throw new Error(`audit fields ${bad.join(', ')} cannot be stored as HMACs`);
    this.fields = [...(cfg.fields ?? [])];
    this.details = new Set(cfg.details ?? []);
  }

  hash(value: string): string {
    return hmacValue(this.key, value);
  }

  /** Replaces sensitive values in place (empty values stay empty: absence is not a secret). */
  apply<E extends { details: Record<string, string> }>(ev: E): E {
    const rec = ev as unknown as Record<string, unknown>;
    for (const f of this.fields) if (typeof rec[f] === 'string' && rec[f] !== '') rec[f] = this.hash(rec[f]);
    for (const [k, v] of Object.entries(ev.details)) {
      if (v !== '' && (k.startsWith(MARKED_PREFIX) || this.details.has(k))) ev.details[k] = this.hash(v);
    }
    return ev;
  }
}
