/**
 * keyshard's view of etcd. All state of a cluster lives under `/keyshard/<cluster>/`
 * (one etcd key per key version, never a growing blob). Values are JSON; everything secret
 * in them is already wrapped by the key hierarchy before it reaches this module.
 *
 * Layout (relative to the namespace):
 *   cluster                      ClusterRecord (cluster id, KEK epoch)     ┐
 *   manifest                     ShareManifest                              │ services/coordinator/src/
 *   keks/<epoch>                 KekRecord {epoch, wrapped}: a KEK wrapped  │ cluster/cluster-store.ts
 *                                by the root key                            │
 *   keks/record-mac              {wrapped}: the record MAC key wrapped by   │
 *                                the root key (cluster/record-integrity.ts) ┘
 *   keys/<key id>                key metadata
 *   versions/<key id>/<version>  version material wrapped by a KEK (version zero-padded)
 *   usage/<key id>/<version>     encryptions reserved and last use of a version (no secret)
 *   names/<name>                 key id (unique names via create-if-absent)
 *   aliases/<name>               {keyId, mac}: the key an alias points to
 *   ceremonies/<id>              ceremony objects
 *   ceremony-lock/<operation>    id of the one open ceremony of that kind
 *   join-vouches/<id>/<replica>  an unsealed replica's vouch for join ceremony <id> (join-voucher.ts)
 *   coordinators/<id>            replica registration (address, ceremony key, sealed), bound to a lease (services/coordinator/src/cluster/replica-store.ts)
 *   seal-epoch                   {epoch, mac}: count of cluster-wide seals (services/coordinator/src/cluster/cluster-store.ts)
 *   share-exports/<ceremony id>  a custodian's share wrapped to an offline recovery key (cluster-store.ts, share-recovery.ts)
 *   share-set-next               {generation, mac}: the share set being made (services/coordinator/src/cluster/cluster-store.ts)
 *   request-tokens/<digest>      {principal, method, token, params, at, outcome, mac}: a state change's idempotency
 *                                token and outcome, written in the change's transaction, kept 24 h
 *                                (services/coordinator/src/keys/request-tokens.ts)
 *   audit/witness/<CN>           a replica's latest cosigned checkpoint of the audit sink (services/coordinator/src/audit-witness/witness-store.ts)
 *   audit/witness-reset          {epoch, anchor, by, time}: the last operator reset of the witnesses (same module)
 * Records marked with a mac, key records, quorum ceremonies and unsealed registrations carry a
 * record MAC (services/coordinator/src/cluster/record-integrity.ts says which and why).
 */
import { circuitBreaker, ConsecutiveBreaker, handleWhen } from 'cockatiel';
import { Etcd3, Range, isRecoverableError, type Lease, type Namespace, type IOptions, type Watcher } from 'etcd3';
import { ResendPolicy } from './resend-policy.ts';
import { etcdCall } from './etcd-call.ts';

export { etcdCall, onEtcdError } from './etcd-call.ts';
export { commitCas, deleteCas, CreateBatcher, type CasPrefixDeletion, type CasResult, type CreateIfAbsent } from './cas.ts';

export { Etcd3, type Lease, type Namespace, type Watcher };

export interface EtcdConfig {
  endpoints: string[];
  tls?: { ca: Buffer; cert: Buffer; key: Buffer };
  /**
   * The name etcd's certificate must carry (subjectAltName), checked instead of the endpoint's
   * host: pins etcd when endpoints are IP addresses (dev: `etcd`, a name only etcd's certificate has).
   */
  serverName?: string;
  callTimeoutMs?: number;
}

/**
 * Each host's circuit breaker: etcd3's default opens it for 5 s after 3 failures in a row, and
 * every call to that host then fails at once; with one etcd endpoint (or all of them briefly
 * unreachable, as when an etcd leader dies) that made the whole replica fail for 5 s after a
 * hiccup of under a second. Here it takes 5 failures and lets a call through again after 1 s.
 */
const hostBreaker = () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1_000, breaker: new ConsecutiveBreaker(5) });

export function connectEtcd(cfg: EtcdConfig): Etcd3 {
  const timeout = cfg.callTimeoutMs ?? 5_000;
  const resends = new ResendPolicy();
  const options: IOptions = {
    hosts: cfg.endpoints,
    dialTimeout: timeout,
    // Every unary call gets a deadline (the client sets none by default); watches and lease
    // keep-alives are streams and must not. Noting the call lets the policy resend only reads.
    defaultCallOptions: (ctx) => {
      resends.noteCall(ctx);
      return ctx.isStream ? {} : { deadline: Date.now() + timeout };
    },
    // Never etcd3's default (resend any call on a transient error): a write whose answer was
    // lost would be applied twice (resend-policy.ts). Each host keeps a circuit breaker (hostBreaker).
    faultHandling: { global: resends.global, host: hostBreaker },
    // Whole-prefix reads (every key record at start-up: ~530 bytes a key) outgrow grpc-js's
    // default 4 MiB answer at about 8,000 keys; allow 256 MiB (reading in pages is the next step).
    grpcOptions: { 'grpc.max_receive_message_length': 256 * 1024 * 1024 },
  };
  if (cfg.tls) {
    options.credentials = { rootCertificate: cfg.tls.ca, privateKey: cfg.tls.key, certChain: cfg.tls.cert };
    // etcd3 builds its own channel credentials (no checkServerIdentity hook), so etcd is pinned
    // by name: `serverName` is checked against the certificate's subjectAltName (RFC 6125)
    // instead of the endpoint's host. Without it, loopback IPs are checked against
    // DNS:localhost (no IP as SNI), as before; other endpoints against their host name.
    if (cfg.serverName) options.grpcOptions = { ...options.grpcOptions, 'grpc.ssl_target_name_override': cfg.serverName };
    else if (cfg.endpoints.every((e) => /^https:\/\/127\.\d+\.\d+\.\d+:\d+$/.test(e)))
      options.grpcOptions = { ...options.grpcOptions, 'grpc.ssl_target_name_override': 'localhost' };
  }
  return new Etcd3(options);
}

/** How compactAndDefragment ended. */
export type CompactOutcome = { defragmented: true } | { defragmented: false; reason: string };

/**
 * Drops every revision older than `revision` (physically), then defragments the member the
 * client talks to, so a deleted value (e.g. a destroyed key's wrapped material) survives in no
 * old revision and no free page of the backend database. With etcd auth on, compaction needs
 * no role but defragment needs etcd's root role, which coordinators do not hold (deploy/etcd-auth.sh):
 * then the outcome says so, and the etcd operator's `etcdctl defrag --cluster` finishes the job.
 * Any other failure throws UNAVAILABLE.
 */
export async function compactAndDefragment(client: Etcd3, revision: string): Promise<CompactOutcome> {
  await etcdCall('compact', () => client.kv.compact({ revision, physical: true }));
  return etcdCall('defragment', async (): Promise<CompactOutcome> => {
    try {
      await client.maintenance.defragment();
      return { defragmented: true };
    } catch (e) {
      // etcd 3.4 answers "auth: permission denied" (gRPC UNKNOWN) to a user without the root role.
      if (!/permission denied/i.test((e as Error).message ?? '')) throw e;
      return { defragmented: false, reason: 'etcd refused defragment (it needs the etcd root role, which coordinators do not hold); the etcd operator runs etcdctl defrag --cluster' };
    }
  });
}

export const clusterPrefix = (cluster: string) => `/keyshard/${cluster}/`;
export const clusterNamespace = (client: Etcd3, cluster: string): Namespace => client.namespace(clusterPrefix(cluster));

export const paths = {
  cluster: 'cluster',
  manifest: 'manifest',
  kek: (epoch: number) => `keks/${epoch}`,
  /** Every wrapped KEK and the record MAC key (services/coordinator/src/cluster/cluster-store.ts). */
  keksPrefix: 'keks/',
  /** The record MAC key, wrapped under the root beside the KEKs (re-wrapped with them, backed up with them). */
  recordMacKey: 'keks/record-mac',
  key: (keyId: string) => `keys/${keyId}`,
  keysPrefix: 'keys/',
  versionsPrefix: (keyId: string) => `versions/${keyId}/`,
  /** Every key's versions. */
  allVersionsPrefix: 'versions/',
  version: (keyId: string, version: number) => `versions/${keyId}/${String(version).padStart(10, '0')}`,
  /** Per-version usage (encryptions reserved, last use): services/coordinator/src/keys/usage-store.ts. */
  usagePrefix: 'usage/',
  keyUsagePrefix: (keyId: string) => `usage/${keyId}/`,
  usage: (keyId: string, version: number) => `usage/${keyId}/${String(version).padStart(10, '0')}`,
  name: (name: string) => `names/${name}`,
  namesPrefix: 'names/',
  alias: (name: string) => `aliases/${name}`,
  aliasesPrefix: 'aliases/',
  ceremony: (id: string) => `ceremonies/${id}`,
  ceremoniesPrefix: 'ceremonies/',
  ceremonyLock: (operation: string) => `ceremony-lock/${operation}`,
  ceremonyLocksPrefix: 'ceremony-lock/',
  /** An unsealed replica's vouch for a join ceremony (services/coordinator/src/ceremonies/join-voucher.ts). */
  joinVouch: (ceremonyId: string, voucher: string) => `join-vouches/${ceremonyId}/${voucher}`,
  joinVouchesPrefix: (ceremonyId: string) => `join-vouches/${ceremonyId}/`,
  coordinator: (id: string) => `coordinators/${id}`,
  coordinatorsPrefix: 'coordinators/',
  /** The share generation a reshare / rotate-root in progress delivers (never reused). */
  shareSetNext: 'share-set-next',
  /** Cluster-wide seals so far: every replica watches it and seals when it rises. */
  sealEpoch: 'seal-epoch',
  /** Custodian recovery exports (wrapped to the operator's offline key; no plaintext). */
  shareExport: (ceremonyId: string) => `share-exports/${ceremonyId}`,
  /** A state change's idempotency token and outcome; `digest` names caller, method and token (request-tokens.ts). */
  requestToken: (digest: string) => `request-tokens/${digest}`,
  requestTokensPrefix: 'request-tokens/',
  /** Witness records (signed by the witness and the sink: no record MAC needed) and the reset record. */
  auditPrefix: 'audit/',
  witness: (certificateCn: string) => `audit/witness/${certificateCn}`,
  witnessesPrefix: 'audit/witness/',
  witnessReset: 'audit/witness-reset',
} as const;

/**
 * What a backup holds, in the order it is written (KEKs before the versions they wrap): the
 * durable state of the cluster, and the audit witnesses' records (the largest audit checkpoints
 * the cluster vouched for; not the witness reset record: a restored reset must not re-anchor). Ceremonies, locks, replica registrations, seal epoch and
 * elections are live coordination and are not backed up. Exact names have no trailing slash.
 */
export const BACKUP_PREFIXES = ['cluster', 'manifest', 'keks/', 'keys/', 'versions/', 'usage/', 'names/', 'aliases/', 'audit/witness/'] as const;

/** The deletion of one such entry: a prefix (trailing slash) or an exact key. */
export const deletionOf = (ns: Namespace, path: string) => (path.endsWith('/') ? ns.delete().prefix(path) : ns.delete().key(path));

/**
 * The key-values under `prefix`, `pageSize` at a time, in key order (keys relative to `ns`): a
 * growing prefix read in one call outgrows the client's message limit.
 */
export async function* pagesOf(ns: Namespace, prefix: string, pageSize: number, what: string): AsyncGenerator<{ key: string; value: Buffer; modRevision: string }[]> {
  const end = Range.prefix(prefix).end;
  let from: string = prefix;
  const nsPrefix = ns.prefix.toString();
  for (;;) {
    const res = await etcdCall(what, () => ns.getAll().inRange(new Range(from, end)).limit(pageSize).exec());
    const page = res.kvs.map((kv) => {
      const k = kv.key.toString();
      return { key: k.startsWith(nsPrefix) ? k.slice(nsPrefix.length) : k, value: kv.value, modRevision: kv.mod_revision };
    });
    if (page.length > 0) yield page;
    if (page.length < pageSize) return;
    from = `${page.at(-1)!.key}\0`;
  }
}

/** Deletes of every key under `prefix` but `keep`: two ranges, however many keys (one delete per key would exceed etcd's 128 operations per transaction). */
export function deletionsExcept(ns: Namespace, prefix: string, keep: string) {
  const all = Range.prefix(prefix);
  return [ns.delete().inRange(new Range(all.start, keep)), ns.delete().inRange(new Range(`${keep}\0`, all.end))];
}

export async function getJson<T>(ns: Namespace, key: string): Promise<T | undefined> {
  const raw = await etcdCall(`get ${key}`, () => ns.get(key).string());
  return raw === null ? undefined : (JSON.parse(raw) as T);
}

export async function putJson(ns: Namespace, key: string, value: unknown, lease?: { put(key: string): { value(v: string): Promise<unknown> } }): Promise<void> {
  const body = JSON.stringify(value);
  await etcdCall(`put ${key}`, () => (lease ? lease.put(key).value(body) : ns.put(key).value(body).exec()));
}

/** Puts `key` only if it does not exist; returns whether it was created. */
export async function createJson(ns: Namespace, key: string, value: unknown): Promise<boolean> {
  const res = await etcdCall(`create ${key}`, () =>
    ns.if(key, 'Create', '==', 0).then(ns.put(key).value(JSON.stringify(value))).commit(),
  );
  return res.succeeded;
}

export async function listJson<T>(ns: Namespace, prefix: string): Promise<Map<string, T>> {
  const all = await etcdCall(`list ${prefix}`, () => ns.getAll().prefix(prefix).strings());
  return new Map(Object.entries(all).map(([k, v]) => [k, JSON.parse(v) as T]));
}
