/**
 * TEST-ONLY: the keys aggregate as one coordinator replica builds it, for module tests against a
 * real etcd (@keyshard/devcluster/test-etcd) — no custodian, no HSM. The seal is opened with a
 * KEK and a record MAC key given here instead of by an unseal ceremony, and the cluster is
 * reduced to its initialised record. Replicas of one cluster share `ClusterSecrets`.
 */
import { randomBytes } from 'node:crypto';
import type { Namespace } from '@keyshard/store';
import { Seal } from '../cluster/seal.ts';
import { RecordIntegrity, type IntegrityViolation } from '../cluster/record-integrity.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { Keyring } from './keyring.ts';
import { KeyStore } from './key-store.ts';

export interface ClusterSecrets {
  kek: Buffer;
  recordMacKey: Buffer;
}

export const clusterSecrets = (): ClusterSecrets => ({ kek: randomBytes(32), recordMacKey: randomBytes(32) });

export const TEST_CLUSTER_ID = 'c-module-test';

export interface TestReplica {
  seal: Seal;
  integrity: RecordIntegrity;
  /** Records that failed their check, as the coordinator would log, count and audit them. */
  reports: IntegrityViolation[];
  cluster: Cluster;
}

/** A replica's seal (unsealed, KEK epoch 1), record integrity and cluster, on secrets of its cluster. */
export function testReplica(secrets: ClusterSecrets): TestReplica {
  const seal = new Seal();
  seal.open(randomBytes(32), new Map([[1, Buffer.from(secrets.kek)]]), seal.generation, Buffer.from(secrets.recordMacKey));
  const reports: IntegrityViolation[] = [];
  const integrity = new RecordIntegrity(seal, (v) => reports.push(v));
  const record = { clusterId: TEST_CLUSTER_ID, state: 'initialized', kekEpoch: 1, createdAt: '' };
  const cluster = { requireInitialized: () => ({ record, manifest: {} }) } as unknown as Cluster;
  return { seal, integrity, reports, cluster };
}

/** A replica's keyring on `ns` (closed by the caller), and its store. */
export function testKeyring(ns: Namespace, r: TestReplica, minRotationPeriodSeconds = 60): { keyring: Keyring; store: KeyStore } {
  return { keyring: new Keyring(ns, r.cluster, r.seal, r.integrity, { minRotationPeriodSeconds }), store: new KeyStore(ns, r.integrity) };
}
