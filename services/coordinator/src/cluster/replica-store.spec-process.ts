// The replica process of replica-store.spec.ts: registers (sealed) on the etcd at argv[2] as
// argv[4] of cluster argv[3], says so, and stays until it is killed.
import { connectEtcd } from '@keyshard/store';
import { ReplicaStore } from './replica-store.ts';
import { collectingIntegrity, quietLog } from './test-support.ts';
import { Seal } from './seal.ts';

const [endpoint, cluster, id] = process.argv.slice(2) as [string, string, string];
const client = connectEtcd({ endpoints: [endpoint] });
const me = { id, address: `${id}:7000`, publicKeyPem: `transport-${id}`, ephemeralPublicKeyPem: `ephemeral-${id}` };
const store = new ReplicaStore(client, me, { clusterName: cluster, ttlSeconds: 2, integrity: collectingIntegrity(new Seal()).integrity, log: quietLog });
await store.register();
process.stdout.write('registered\n');
setInterval(() => {}, 60_000);
