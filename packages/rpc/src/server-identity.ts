/**
 * Pinned peers: every keyshard client states which server it expects, and a connection is
 * refused unless the server's certificate, besides chaining to the cluster CA, is that server.
 *
 * Checks, in order, on every TLS handshake (grpc-js `checkServerIdentity`):
 *  1. the name dialled (or the configured target name) is in the certificate's subjectAltName
 *     (RFC 6125, node's `tls.checkServerIdentity`), as before;
 *  2. the certificate's extendedKeyUsage names serverAuth (RFC 5280 §4.2.1.12,
 *     id-kp-serverAuth 1.3.6.1.5.5.7.3.1). OpenSSL already refuses a server certificate whose
 *     EKU lacks serverAuth; this also refuses one with no EKU extension at all, so a principal's
 *     client-only certificate can never serve, whatever the CA put in it;
 *  3. the certificate's subject CN, the principal keyshard authorises everywhere, is one the
 *     client expects (a custodian's id, `audit-sink`, a coordinator replica's id).
 * Threat: any certificate of the CA that can take an address (the `app` client certificate, a
 * custodian's, a coordinator's) passing for the audit sink, a custodian or a coordinator.
 * A refusal fails the connection: calls end UNAVAILABLE with a message naming what was
 * expected and what was presented (never a secret: CNs are public).
 */
import { checkServerIdentity, type PeerCertificate } from 'node:tls';

export const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';
export const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

/** The server a client expects at the other end of a connection. */
export interface ExpectedServer {
  /** For messages: "custodian custodian-2", "the audit sink", "a coordinator replica". */
  role: string;
  /**
   * Certificate common names accepted: a list, or a pattern for a family (coordinator replicas
   * when the caller does not know their ids); `null` accepts any CN (ANY_CLUSTER_SERVER only).
   */
  names: readonly string[] | RegExp | null;
}

/** Expects the server whose certificate CN is `cn` (or one of `cns`). */
export function expectServer(role: string, ...cns: string[]): ExpectedServer {
  if (cns.length === 0 || cns.some((c) => typeof c !== 'string' || c === '')) throw new Error(`expected server ${role}: at least one non-empty certificate name`);
  return { role, names: cns };
}

/** The audit sink's certificate CN unless configured otherwise (dev PKI, deploy/). */
export const AUDIT_SINK_ID = 'audit-sink';

/**
 * Coordinator replica ids by convention (`coordinator-1`, k8s `keyshard-coordinator-0`): the
 * SDK's default when it is not given the replicas' ids. The dev PKI and deploy/ name no other
 * principal this way; a CA that does must configure the ids instead (ClientOptions.coordinatorIds).
 */
export const COORDINATOR_ID_PATTERN = /^(?:[a-z0-9][a-z0-9-]*-)?coordinator-\d{1,4}$/;

/** The coordinators of a cluster: by id when known, else by COORDINATOR_ID_PATTERN. */
export function expectCoordinator(ids?: readonly string[]): ExpectedServer {
  return ids && ids.length > 0 ? expectServer('a coordinator replica', ...ids) : { role: 'a coordinator replica', names: COORDINATOR_ID_PATTERN };
}

/**
 * Any server certificate of the cluster CA that carries serverAuth: for health probes and
 * tests that dial a component by address on purpose. Never for a link that carries data.
 */
export const ANY_CLUSTER_SERVER: ExpectedServer = Object.freeze({ role: 'any server of the cluster CA', names: null });

const MAX_SHOWN = 128;
const shown = (s: string | undefined) => (s === undefined ? '(none)' : JSON.stringify(s.length > MAX_SHOWN ? `${s.slice(0, MAX_SHOWN)}…` : s));

function describeNames(names: ExpectedServer['names']): string {
  if (names === null) return 'any CN';
  if (names instanceof RegExp) return `CN matching ${names.source}`;
  return names.length === 1 ? `CN ${shown(names[0])}` : `CN one of ${names.map(shown).join(', ')}`;
}

function cnOf(cert: PeerCertificate): string | undefined {
  const cn = cert.subject?.CN as unknown;
  // node gives an array when the subject holds several CNs: that is no single identity.
  return typeof cn === 'string' ? cn : undefined;
}

/** Why `cert` is not the expected server, or undefined when it is (steps 2 and 3 above). */
export function serverIdentityProblem(cert: PeerCertificate, expected: ExpectedServer): string | undefined {
  const cn = cnOf(cert);
  const want = `${expected.role} (${describeNames(expected.names)}, extendedKeyUsage serverAuth)`;
  const eku = cert.ext_key_usage ?? [];
  if (!eku.includes(SERVER_AUTH_OID)) return `expected ${want}; the server presented CN ${shown(cn)} whose certificate is not for serverAuth`;
  const { names } = expected;
  const ok = names === null ? cn !== undefined : cn !== undefined && (names instanceof RegExp ? names.test(cn) : names.includes(cn));
  return ok ? undefined : `expected ${want}; the server presented CN ${shown(cn)}`;
}

/**
 * A `checkServerIdentity` for tls.connect / grpc-js: the subjectAltName check node does by
 * default, then serverIdentityProblem. `address` only labels the error; `onCheck` hears each
 * outcome (the refusal's message, or undefined when the server passed).
 */
export function pinnedServerCheck(
  expected: ExpectedServer,
  address: string,
  onCheck?: (refusal: string | undefined) => void,
): (host: string, cert: PeerCertificate) => Error | undefined {
  return (host, cert) => {
    const san = checkServerIdentity(host, cert);
    const problem = san ? san.message : serverIdentityProblem(cert, expected);
    const refusal = problem === undefined ? undefined : `server identity check failed at ${address}: ${problem}`;
    onCheck?.(refusal);
    return refusal === undefined ? undefined : new Error(refusal);
  };
}
