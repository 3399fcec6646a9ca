/**
 * Trusted-key enrollment on a custodian (operator RPCs): the token's security officer enrolls a
 * coordinator's long-term transport key (or an offline recovery key) as CKA_TRUSTED, revokes it,
 * or lists what is enrolled. Enrollment covers init, reshare, a join of a new replica identity,
 * and a transport key's rotation (enroll the new, then revoke the old).
 *
 * Invariants: the SO PIN is taken from the request for this one call, handed to the token and
 * never kept, logged or echoed (a wrong one is PERMISSION_DENIED "SO login failed"); a transport
 * key is enrolled only for a coordinator this custodian is configured to serve; every call —
 * refused ones included — is audited by the custodian's observer with the facts set here
 * (kind, name, fingerprint, never the PIN).
 */
import { createHash, createPublicKey } from 'node:crypto';
import { failedPrecondition, invalidArgument, notFound } from '@keyshard/errors';
import { parseRecoveryPublicKey, parseTransportPublicKey, recoveryKeyFingerprint } from '@keyshard/crypto';
import type { CallContext, pb } from '@keyshard/rpc';
import type { CustodianToken, TrustedKind, WrapTarget } from '@keyshard/hsm';

const MAX_PEM = 16 * 1024;

function kindOf(v: unknown): TrustedKind {
  const k = String(v || 'transport');
  if (k !== 'transport' && k !== 'recovery') throw invalidArgument("kind must be 'transport' or 'recovery'");
  return k;
}

function soPinOf(v: unknown): string {
  const pin = typeof v === 'string' ? v : '';
  if (pin.length === 0 || pin.length > 255) throw invalidArgument('so_pin is required (the token security officer\'s PIN, for this call only)');
  return pin;
}

function pemOf(v: unknown, what: string): string {
  const pem = typeof v === 'string' ? v : '';
  if (pem.length === 0 || pem.length > MAX_PEM) throw invalidArgument(`${what} is required (an RSA public key PEM)`);
  return pem;
}

/** The public key PEM of `kind` as the one check of its kind reads it (@keyshard/crypto rsa-oaep.ts): a private key is refused. */
const publicKeyOf = (kind: TrustedKind, pem: string): string => (kind === 'recovery' ? parseRecoveryPublicKey(pem) : parseTransportPublicKey(pem)).publicKeyPem;

const fingerprint = (pem: string) => createHash('sha256').update(createPublicKey(pem).export({ type: 'spki', format: 'der' })).digest('hex');

export class TrustedKeys {
  constructor(
    private readonly token: CustodianToken,
    private readonly custodianId: string,
    private readonly coordinators: ReadonlySet<string>,
  ) {}

  #target(kind: TrustedKind, coordinatorId: unknown, pem: string | undefined, ctx: CallContext): WrapTarget {
    if (kind === 'recovery') {
      if (!pem) throw invalidArgument('public_key_pem names the recovery key to revoke');
      const name = recoveryKeyFingerprint(pem);
      ctx.facts.details = { kind, fingerprint: name };
      return { kind, name };
    }
    const id = String(coordinatorId ?? '');
    ctx.facts.details = { kind, coordinator_id: id, ...(pem ? { fingerprint: safeFingerprint(pem) } : {}) };
    if (!/^[\w.-]{1,64}$/.test(id)) throw invalidArgument('coordinator_id is not valid');
    if (!this.coordinators.has(id)) throw failedPrecondition(`coordinator ${id} is not one this custodian serves (its config's coordinators)`);
    return { kind, name: id };
  }

  enroll(req: pb.EnrollTransportKeyRequest__Output, ctx: CallContext): pb.EnrollTransportKeyResponse {
    const kind = kindOf(req.kind);
    // Only an RSA *public* key is enrolled — a recovery key of >= 3072 bits, a transport key of
    // 2048..8192 — and a private key is refused (unquoted) before the token or the audit sees
    // anything of it; the token gets the key re-encoded as SPKI PEM, never the caller's text.
    const pem = publicKeyOf(kind, pemOf(req.public_key_pem, 'public_key_pem'));
    const to = this.#target(kind, req.coordinator_id, pem, ctx);
    const added = this.token.enrollTrustedKey(to, pem, soPinOf(req.so_pin));
    const fp = fingerprint(pem);
    ctx.facts.details = { ...ctx.facts.details, fingerprint: fp, already_enrolled: String(!added) };
    return { custodian_id: this.custodianId, kind, name: to.name, fingerprint: fp, already_enrolled: !added };
  }

  revoke(req: pb.RevokeTransportKeyRequest__Output, ctx: CallContext): pb.RevokeTransportKeyResponse {
    const kind = kindOf(req.kind);
    // A recovery key is named by recoveryKeyFingerprint (lenient on size, so keys enrolled before
    // the 3072-bit floor can be revoked; it refuses a private key too).
    const given = req.public_key_pem ? pemOf(req.public_key_pem, 'public_key_pem') : undefined;
    const pem = given && kind === 'transport' ? parseTransportPublicKey(given).publicKeyPem : given;
    const to = this.#target(kind, req.coordinator_id, pem, ctx);
    const revoked = this.token.revokeTrustedKey(to, soPinOf(req.so_pin), pem);
    ctx.facts.details = { ...ctx.facts.details, revoked: String(revoked) };
    if (revoked === 0) throw notFound(`no trusted ${kind} key is enrolled for ${kind === 'transport' ? `coordinator ${to.name}` : 'that recovery key'}`);
    return { custodian_id: this.custodianId, revoked };
  }

  list(): pb.ListTrustedKeysResponse {
    return {
      custodian_id: this.custodianId,
      keys: this.token.listTrustedKeys().map((k) => ({ kind: k.kind, name: k.name, public_key_pem: k.publicKeyPem, fingerprint: k.fingerprint })),
    };
  }
}

function safeFingerprint(pem: string): string {
  try {
    return fingerprint(pem);
  } catch {
    return 'invalid';
  }
}
