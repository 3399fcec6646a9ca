/**
 * Internal PKCS#11 plumbing for @keyshard/hsm (not exported from the package index).
 *
 * Invariants:
 * - A PKCS#11 module is loaded and C_Initialize'd once per process and path, reference-counted
 *   across TokenHandles, and C_Finalize'd when the last handle closes (PKCS#11 v2.40 §5.4).
 * - Tokens are found by CK_TOKEN_INFO.label, never by slot id (SoftHSM slot ids change).
 * - Login state is per application and token (PKCS#11 v2.40 §5.6), so every handle keeps one
 *   dedicated "login" session open that is never used for operations; when it closes the user
 *   is logged out. A second handle in the same process must present the same PIN (compared by
 *   digest) since the token will not check it again.
 * - One operation per session: operations borrow a session from a small pool, and a session
 *   that saw ANY error is closed, never reused (SoftHSM can leave it in CKR_OPERATION_ACTIVE).
 * - Error messages carry only the CKR_* name and what was being done: never PINs or key
 *   material (graphene/pkcs11js errors carry only the return-value name).
 * - All graphene calls are synchronous; callers keep them off hot paths.
 * - Security-officer work (`asSecurityOfficer`) runs inside ONE synchronous call: the process's
 *   user login is dropped (C_Logout), the SO logs in with the PIN passed for that call only,
 *   acts, logs out, and the user logs in again — no other JavaScript runs in between, so no
 *   operation of this process ever sees the SO session. The SO PIN is never kept; the user PIN
 *   is kept by the handle only to log the user back in.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import graphene from 'graphene-pk11';
import type { Module, Session, SessionObject, Slot, ITemplate } from 'graphene-pk11';
import { KeyshardError, type ErrorCode } from '@keyshard/errors';

/** Mechanism and attribute numbers graphene has no names for (PKCS#11 v3.0 values, used by SoftHSM 2.6). */
export const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
export const CKM_EDDSA = 0x1057;
export const CKK_EC_EDWARDS = 0x40;
export const CKA_EC_PARAMS = 0x180;
export const CKA_EC_POINT = 0x181;

const RW_SESSION = graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION;
const MAX_IDLE_SESSIONS = 4;

/** PKCS#11 v2.40 return values pkcs11js has no names for (it reports them as CKR_VENDOR_DEFINED). */
const UNNAMED_CKR: Record<number, string> = { 0x1b: 'CKR_ACTION_PROHIBITED' };

export function ckrName(e: unknown): string | undefined {
  const msg = e instanceof Error ? e.message : '';
  const name = /\bCKR_[A-Z0-9_]+\b/.exec(msg)?.[0];
  // pkcs11js puts the number after the name: "CKR_VENDOR_DEFINED:27".
  const code = Number(/\bCKR_VENDOR_DEFINED:(\d+)/.exec(msg)?.[1] ?? (e as { code?: unknown })?.code);
  if (name === 'CKR_VENDOR_DEFINED' && UNNAMED_CKR[code]) return UNNAMED_CKR[code];
  return name;
}

/** CKA_COPYABLE and CKA_DESTROYABLE (PKCS#11 v2.40 §4.4) are unknown to graphene 2.3: registered by number. */
graphene.registerAttribute('copyable', 0x171, 'boolean');
graphene.registerAttribute('destroyable', 0x172, 'boolean');

/**
 * Turns a graphene/pkcs11js failure into a KeyshardError. `what` describes the operation
 * ("unwrap the share"); only the CKR_* name of the cause is added to the message.
 */
export function p11Error(what: string, e: unknown, overrides: Partial<Record<string, ErrorCode>> = {}): KeyshardError {
  if (e instanceof KeyshardError) return e;
  const ckr = ckrName(e);
  let code: ErrorCode = 'INTERNAL';
  let hint = '';
  switch (ckr) {
    case 'CKR_PIN_INCORRECT':
    case 'CKR_PIN_LOCKED':
    case 'CKR_PIN_EXPIRED':
    case 'CKR_PIN_INVALID':
    case 'CKR_PIN_LEN_RANGE':
    case 'CKR_USER_PIN_NOT_INITIALIZED':
    case 'CKR_TOKEN_NOT_RECOGNIZED':
    case 'CKR_TOKEN_NOT_PRESENT':
    case 'CKR_DEVICE_REMOVED':
    case 'CKR_USER_NOT_LOGGED_IN':
      code = 'FAILED_PRECONDITION';
      break;
    case 'CKR_ENCRYPTED_DATA_INVALID':
    case 'CKR_ENCRYPTED_DATA_LEN_RANGE':
    case 'CKR_WRAPPED_KEY_INVALID':
    case 'CKR_WRAPPED_KEY_LEN_RANGE':
    case 'CKR_DATA_LEN_RANGE':
    case 'CKR_KEY_SIZE_RANGE':
      code = 'INVALID_ARGUMENT';
      break;
    case 'CKR_ARGUMENTS_BAD':
    case 'CKR_MECHANISM_INVALID':
    case 'CKR_MECHANISM_PARAM_INVALID':
      code = 'FAILED_PRECONDITION';
      hint = ' (mechanism or parameters not supported by this token; SoftHSM supports RSA-OAEP only with SHA-1)';
      break;
  }
  if (ckr && overrides[ckr]) code = overrides[ckr]!;
  return new KeyshardError(code, `PKCS#11: failed to ${what}: ${ckr ?? 'unexpected error'}${hint}`, { cause: e });
}

interface ModuleEntry {
  module: Module;
  refs: number;
  logins: Map<string, { count: number; pinDigest: Buffer }>;
}
const modules = new Map<string, ModuleEntry>();

function acquireModule(modulePath: string): ModuleEntry {
  const existing = modules.get(modulePath);
  if (existing) {
    existing.refs++;
    return existing;
  }
  if (/softhsm/i.test(modulePath) && !process.env.SOFTHSM2_CONF) {
    throw new KeyshardError('FAILED_PRECONDITION', 'SOFTHSM2_CONF must be set before the SoftHSM module is loaded');
  }
  let module: Module;
  try {
    module = graphene.Module.load(modulePath);
  } catch (e) {
    throw new KeyshardError('FAILED_PRECONDITION', `cannot load PKCS#11 module ${modulePath}`, { cause: e });
  }
  try {
    module.initialize();
  } catch (e) {
    throw p11Error('initialise the PKCS#11 module (check SOFTHSM2_CONF / module configuration)', e, {
      CKR_GENERAL_ERROR: 'FAILED_PRECONDITION',
    });
  }
  const entry: ModuleEntry = { module, refs: 1, logins: new Map() };
  modules.set(modulePath, entry);
  return entry;
}

function releaseModule(modulePath: string): void {
  const entry = modules.get(modulePath);
  if (!entry) return;
  if (--entry.refs > 0) return;
  modules.delete(modulePath);
  try {
    entry.module.finalize();
  } catch {
    /* finalize failures leave nothing for us to clean up */
  }
}

function findSlotByLabel(module: Module, tokenLabel: string): Slot {
  const slots = module.getSlots(true);
  const matches: Slot[] = [];
  for (let i = 0; i < slots.length; i++) {
    const slot = slots.items(i);
    let label: string;
    try {
      label = slot.getToken().label.trim();
    } catch {
      continue; // a slot whose token cannot be queried is not ours
    }
    if (label === tokenLabel) matches.push(slot);
  }
  if (matches.length === 0) throw new KeyshardError('NOT_FOUND', `no PKCS#11 token labelled "${tokenLabel}"`);
  if (matches.length > 1) {
    throw new KeyshardError('FAILED_PRECONDITION', `more than one PKCS#11 token is labelled "${tokenLabel}"`);
  }
  return matches[0]!;
}

const digestPin = (pin: string) => createHash('sha256').update('keyshard-hsm-pin\0').update(pin, 'utf8').digest();

/** A logged-in connection to one token, with a pool of operation sessions. */
export class TokenHandle {
  private closed = false;
  private readonly idle: Session[] = [];

  private constructor(
    private readonly modulePath: string,
    private readonly entry: ModuleEntry,
    private readonly slot: Slot,
    private readonly loginKey: string,
    private readonly loginSession: Session,
    private readonly userPin: string,
    private readonly tokenLabel: string,
  ) {}

  static open(modulePath: string, tokenLabel: string, pin: string): TokenHandle {
    if (!modulePath) throw new KeyshardError('INVALID_ARGUMENT', 'modulePath is required');
    if (!tokenLabel) throw new KeyshardError('INVALID_ARGUMENT', 'tokenLabel is required');
    if (typeof pin !== 'string' || pin.length === 0) throw new KeyshardError('INVALID_ARGUMENT', 'pin is required');
    const entry = acquireModule(modulePath);
    let loginSession: Session | undefined;
    try {
      const slot = findSlotByLabel(entry.module, tokenLabel);
      const loginKey = slot.handle.toString('hex');
      try {
        loginSession = slot.open(RW_SESSION);
      } catch (e) {
        throw p11Error(`open a session on token "${tokenLabel}"`, e);
      }
      const pinDigest = digestPin(pin);
      const login = entry.logins.get(loginKey);
      if (login) {
        // Already logged in by another handle of this process: C_Login would not check the PIN.
        if (!timingSafeEqual(login.pinDigest, pinDigest)) {
          throw new KeyshardError('FAILED_PRECONDITION', `login to token "${tokenLabel}" failed: CKR_PIN_INCORRECT`);
        }
        login.count++;
      } else {
        try {
          loginSession.login(pin, graphene.UserType.USER);
        } catch (e) {
          if (ckrName(e) !== 'CKR_USER_ALREADY_LOGGED_IN') throw p11Error(`log in to token "${tokenLabel}"`, e);
        }
        entry.logins.set(loginKey, { count: 1, pinDigest });
      }
      return new TokenHandle(modulePath, entry, slot, loginKey, loginSession, pin, tokenLabel);
    } catch (e) {
      try {
        loginSession?.close();
      } catch {
        /* ignore */
      }
      releaseModule(modulePath);
      throw e;
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Runs `fn` on a session of its own. The session returns to the pool only if `fn` succeeded;
   * after any error it is closed (which also destroys any session objects it created).
   */
  withSession<T>(what: string, fn: (s: Session) => T, overrides: Partial<Record<string, ErrorCode>> = {}): T {
    if (this.closed) throw new KeyshardError('FAILED_PRECONDITION', 'custodian token is closed');
    let session: Session;
    try {
      session = this.idle.pop() ?? this.slot.open(RW_SESSION);
    } catch (e) {
      throw p11Error('open a session', e);
    }
    let ok = false;
    try {
      const result = fn(session);
      ok = true;
      return result;
    } catch (e) {
      throw p11Error(what, e, overrides);
    } finally {
      if (ok && this.idle.length < MAX_IDLE_SESSIONS) {
        this.idle.push(session);
      } else {
        try {
          session.close();
        } catch {
          /* a broken session is dropped either way */
        }
      }
    }
  }

  /**
   * Runs `fn` in a security-officer session (PKCS#11 v2.40 §5.6: only one user type per token and
   * application, so the user is logged out first and logged in again after, whatever happens).
   * A refused SO PIN is PERMISSION_DENIED "SO login failed" (never the PIN).
   */
  asSecurityOfficer<T>(what: string, soPin: string, fn: (s: Session) => T): T {
    if (this.closed) throw new KeyshardError('FAILED_PRECONDITION', 'custodian token is closed');
    if (typeof soPin !== 'string' || soPin.length === 0) throw new KeyshardError('INVALID_ARGUMENT', 'the SO PIN is required');
    let session: Session;
    try {
      session = this.slot.open(RW_SESSION);
    } catch (e) {
      throw p11Error('open a session', e);
    }
    try {
      try {
        this.loginSession.logout();
      } catch (e) {
        if (ckrName(e) !== 'CKR_USER_NOT_LOGGED_IN') throw p11Error('log the user out for SO work', e);
      }
      try {
        session.login(soPin, graphene.UserType.SO);
      } catch (e) {
        const ckr = ckrName(e);
        if (ckr === 'CKR_PIN_INCORRECT' || ckr === 'CKR_PIN_LEN_RANGE' || ckr === 'CKR_PIN_INVALID' || ckr === 'CKR_PIN_LOCKED')
          throw new KeyshardError('PERMISSION_DENIED', `SO login failed on token "${this.tokenLabel}" (${ckr})`);
        throw p11Error('log in as security officer', e);
      }
      try {
        return fn(session);
      } catch (e) {
        throw p11Error(what, e);
      } finally {
        try {
          session.logout();
        } catch {
          /* closing the session below ends the SO login too */
        }
      }
    } finally {
      try {
        session.close();
      } catch {
        /* ignore */
      }
      this.#userLoginAgain();
    }
  }

  #userLoginAgain(): void {
    try {
      this.loginSession.login(this.userPin, graphene.UserType.USER);
    } catch (e) {
      if (ckrName(e) === 'CKR_USER_ALREADY_LOGGED_IN') return;
      // Without the user login this handle can do nothing: say so plainly.
      this.close();
      throw p11Error(`log the user in again on token "${this.tokenLabel}" after SO work (the handle is closed)`, e);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.idle.splice(0)) {
      try {
        s.close();
      } catch {
        /* ignore */
      }
    }
    const login = this.entry.logins.get(this.loginKey);
    if (login && --login.count <= 0) {
      this.entry.logins.delete(this.loginKey);
      try {
        this.loginSession.logout();
      } catch {
        /* closing the last session logs out anyway */
      }
    }
    try {
      this.loginSession.close();
    } catch {
      /* ignore */
    }
    releaseModule(this.modulePath);
  }
}

/** Finds at most one object matching `template`; more than one is a broken token state. */
export function findOne(s: Session, template: ITemplate, what: string): SessionObject | null {
  const found = s.find(template);
  if (found.length > 1) {
    throw new KeyshardError('FAILED_PRECONDITION', `token holds ${found.length} objects for ${what}; expected at most one`);
  }
  return found.length === 1 ? found.items(0) : null;
}

export function findAll(s: Session, template: ITemplate): SessionObject[] {
  const found = s.find(template);
  const out: SessionObject[] = [];
  for (let i = 0; i < found.length; i++) out.push(found.items(i));
  return out;
}
