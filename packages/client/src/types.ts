/**
 * The keyshard.v1 messages as the SDK hands them out: field names as in the protos
 * (proto/keyshard/v1, loaded with keepCase), 64-bit counters as decimal strings. Shared by
 * the key and ceremony client (index.ts) and the backup client (backup.ts).
 */

export type Context = Record<string, string>;

export interface Key {
  id: string;
  name: string;
  type: string;
  usage: string;
  state: string;
  primary_version: number;
  min_decryption_version: number;
  description: string;
  labels: Record<string, string>;
  created_at: string;
  rotated_at: string;
  created_by: string;
  /** encryptions: a uint64, as a decimal string; last_used_at: empty if never used. */
  versions: { version: number; created_at: string; last_used_at: string; encryptions: string }[];
  rotation: { period_seconds: string; next_rotation_at: string };
  policy: { grants: Record<string, { principals: string[] }> };
  destruction_at: string;
}

export interface Ceremony {
  id: string;
  operation: string;
  cluster_id: string;
  initiator: string;
  created_at: string;
  expires_at: string;
  hash: string;
  state: string;
  threshold: number;
  approved_by: string[];
  failures: { custodian_id: string; reason: string }[];
  denied_by: string[];
  error: string;
  parameters: Record<string, string>;
  recipients: { coordinator_id: string; public_key_pem: string }[];
}

/** A custodian's share wrapped (RSA-OAEP) to an offline recovery key, by an approved export-share ceremony. */
export interface ShareExport {
  ceremony_id: string;
  cluster_id: string;
  custodian_id: string;
  generation: number;
  peers_json: string;
  wrapped_share: Buffer;
  recovery_key_fingerprint: string;
  oaep_hash: string;
  succession_statement: Buffer;
}

export interface Status {
  initialized: boolean;
  sealed: boolean;
  cluster_id: string;
  threshold: number;
  shares: number;
  ceremony: Ceremony | null;
  custodians: { id: string; address: string; reachable: boolean }[];
  coordinator_id: string;
  version: string;
  /** The replica running background jobs; empty if none is elected. */
  leader_id: string;
  /** Every registered coordinator replica. */
  replicas: { id: string; address: string; sealed: boolean; leader: boolean }[];
  /** etcd's members as the answering replica's etcd client sees them (null from an older coordinator). */
  etcd: {
    reachable: boolean;
    members: { id: string; name: string; client_urls: string[]; peer_urls: string[]; leader: boolean; learner: boolean }[];
    version: string;
    error: string;
  } | null;
  /** The audit sink; tree_size (records in its log) is a uint64 as a decimal string. */
  audit_sink: { address: string; reachable: boolean; tree_size: string; checkpoint_time: string; error: string } | null;
}

export interface BatchError {
  code: number;
  message: string;
  /** The item's refusal reason (e.g. WRONG_CONTEXT); '' from a server older than reasons. */
  reason: string;
}

export interface DataKey {
  plaintext: Buffer;
  ciphertext: Buffer;
  key_id: string;
  key_version: number;
}
