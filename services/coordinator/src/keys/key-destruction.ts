/**
 * destroy-key: the quorum-approved end of a key's life (issue "Full key lifecycle" item 7).
 * A key past its destruction waiting period is crypto-shredded: its versions' wrapped
 * material is deleted, its record kept as a tombstone (any use answers "destroyed"), and etcd
 * is compacted so no older revision holds the material. Defragmenting (so no free page of the
 * backend file holds it either) needs etcd's root role: the result (audited with the completed
 * ceremony) says whether it was done or is left to the etcd operator.
 */
import type { CompactOutcome } from '@keyshard/store';
import type { Keyring } from './keyring.ts';
import { keyStateRefusal } from './key-record.ts';
import type { QuorumOperation } from '../ceremonies/quorum-ceremonies.ts';

export function destroyKeyOperation(keyring: Keyring, compact: (revision: string) => Promise<CompactOutcome>): QuorumOperation {
  return {
    async prepare(p) {
      const k = await keyring.resolve(p.key ?? '');
      if (k.state !== 'KEY_STATE_PENDING_DESTRUCTION') throw keyStateRefusal(k, `key ${k.name} is not pending destruction; schedule it first`, k.state === 'KEY_STATE_DESTROYED' ? 'KEY_DESTROYED' : 'WRONG_KEY_STATE');
      if (Date.parse(k.destructionAt) > Date.now()) throw keyStateRefusal(k, `the waiting period of key ${k.name} ends at ${k.destructionAt}`, 'WAITING_PERIOD');
      // What each custodian's operator sees (keyshard custodian show) and signs.
      return { key_id: k.id, key_name: k.name, key_type: k.type, destruction_at: k.destructionAt, versions: String(k.versions.length) };
    },
    async execute(c) {
      const revision = await keyring.destroy(c.parameters.key_id!);
      const outcome = await compact(revision);
      return { key_id: c.parameters.key_id!, revision, defragmented: outcome.defragmented ? 'yes' : `no: ${outcome.reason}` };
    },
  };
}
