/**
 * The floors of bench:create-key and bench:rotate: raw etcd transactions from the etcd3 client,
 * shaped like those of services/coordinator/src/keys/keyring.ts, against the cluster's own etcd with
 * the coordinator's TLS client certificate (load.ts --target etcd-create | etcd-rotate).
 *
 *   etcd-create  if names/<name> create == 0 then put names/<name>, keys/<id>, versions/<id>/1
 *                (keyring `create`); the values are the records of --template-key, a key made by
 *                CreateKey, with a fresh id and name: the same sizes.
 *   etcd-rotate  get keys/<id>; then if keys/<id> mod == <read> and <fence> create == <rev>
 *                then put keys/<id> (one version more), versions/<id>/<n> (keyring `rotate` as the
 *                fenced leader sweep runs it). Call i rotates the i-th copy of the cluster's keys
 *                named --name-prefix*, copied at start; --count of them.
 *
 * Everything is written under a scratch namespace /keyshard/<cluster>/bench-scratch/<pid>-<random>/ that no
 * coordinator watches, deleted at close. Flags: --etcd URL --ca --cert --key --cluster NAME.
 */
import { randomBytes } from 'node:crypto';
import { clusterNamespace, clusterPrefix, connectEtcd, paths, type Etcd3, type Namespace } from '@keyshard/store';
import { Range } from 'etcd3';
import { required, tlsFromFlags } from './common.ts';
import type { Flags, Target } from './targets.ts';

/** The fields of a key record that a rotation changes (keyring.ts KeyRecord). */
interface RotatingRecord {
  id: string;
  name: string;
  primaryVersion: number;
  rotatedAt: string;
  versions: { version: number; createdAt: string }[];
  rotation: { periodSeconds: number; nextRotationAt: string };
}

/** Copies per transaction when seeding: two puts each, below etcd's default --max-txn-ops 128. */
const COPIES_PER_TXN = 50;


/**
 * Every key-value under `prefix`, a page at a time: one answer must stay below grpc-js's default
 * 4 MiB message limit, which 10,000 key records exceed.
 */
export async function listPaged(ns: Namespace, prefix: string, pageSize = 1000): Promise<{ key: string; value: Buffer; modRevision: string }[]> {
  const end = Range.prefix(prefix).end;
  const out: { key: string; value: Buffer; modRevision: string }[] = [];
  for (let start = prefix; ; ) {
    const res = await ns.getAll().inRange({ start, end }).limit(pageSize).exec();
    for (const kv of res.kvs) out.push({ key: kv.key.toString(), value: kv.value, modRevision: kv.mod_revision }); // keys relative to `ns`
    if (!res.more || res.kvs.length === 0) return out;
    start = `${out[out.length - 1]!.key}\0`;
  }
}

/**
 * Compacts etcd's history up to now (what its periodic auto-compaction does, here every hour).
 * Each measured phase starts from one: in etcd 3.4 every request grows dearer with the history
 * the earlier phases wrote, so that whichever ran later would lose.
 */
export async function compactHistory(etcd: Etcd3): Promise<void> {
  // The current revision from maintenance Status: with etcd auth on, the coordinator's
  // certificate may read nothing outside its cluster's prefix, but Status needs no role.
  const { header } = await etcd.maintenance.status();
  await etcd.kv.compact({ revision: header.revision, physical: true }).catch((e: Error) => {
    // Nothing written since the last compaction: already compacted up to here.
    if (!/required revision has been compacted/.test(e.message)) throw e;
  });
}

async function stringAt(ns: Namespace, key: string): Promise<string> {
  const v = await ns.get(key).string();
  if (v === null) throw new Error(`etcd has no ${key}`);
  return v;
}

export async function etcdTarget(kind: 'etcd-create' | 'etcd-rotate', flags: Flags): Promise<Target> {
  const etcd = connectEtcd({ endpoints: [required(flags, 'etcd')], tls: tlsFromFlags(flags) });
  const cluster = clusterNamespace(etcd, required(flags, 'cluster'));
  // Under the cluster's prefix (the only one the coordinator's etcd user may write), in a folder no coordinator reads.
  const scratch = etcd.namespace(`${clusterPrefix(required(flags, 'cluster'))}bench-scratch/${process.pid}-${randomBytes(4).toString('hex')}/`);
  const close = async () => {
    await scratch.delete().all();
    etcd.close();
  };
  try {
    const call = kind === 'etcd-create' ? await createShape(cluster, scratch, required(flags, 'template-key')) : await rotateShape(cluster, scratch, flags);
    await compactHistory(etcd);
    return { call, close };
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }
}

async function createShape(cluster: Namespace, scratch: Namespace, templateId: string): Promise<Target['call']> {
  const template = JSON.parse(await stringAt(cluster, paths.key(templateId))) as RotatingRecord;
  const version = await stringAt(cluster, paths.version(templateId, 1));
  return async (_worker, seq) => {
    const id = `k_${randomBytes(16).toString('base64url')}`;
    const name = `${template.name}-${seq}`;
    const now = new Date().toISOString();
    const record = JSON.stringify({ ...template, id, name, createdAt: now, rotatedAt: now, versions: [{ version: 1, createdAt: now }] });
    const puts = [scratch.put(paths.name(name)).value(id), scratch.put(paths.key(id)).value(record), scratch.put(paths.version(id, 1)).value(version)];
    const res = await scratch.if(paths.name(name), 'Create', '==', 0).then(...puts).commit();
    if (!res.succeeded) throw new Error(`name ${name} already taken`);
  };
}

/** The record one rotation later; only sizes and the compare-and-swap matter here, not meaning. */
function rotatedOnce(k: RotatingRecord): RotatingRecord {
  const now = new Date();
  k.primaryVersion += 1;
  k.rotatedAt = now.toISOString();
  k.versions.push({ version: k.primaryVersion, createdAt: k.rotatedAt });
  k.rotation.nextRotationAt = new Date(now.getTime() + k.rotation.periodSeconds * 1000).toISOString();
  return k;
}

async function rotateShape(cluster: Namespace, scratch: Namespace, flags: Flags): Promise<Target['call']> {
  const prefix = required(flags, 'name-prefix');
  const count = Number(required(flags, 'count'));
  const records = (await listPaged(cluster, paths.keysPrefix))
    .map((kv) => JSON.parse(kv.value.toString()) as RotatingRecord)
    .filter((k) => k.name.startsWith(prefix))
    .slice(0, count);
  if (records.length < count) throw new Error(`etcd has ${records.length} keys named ${prefix}*, not ${count}`);
  const first = records[0]!;
  const version = await stringAt(cluster, paths.version(first.id, first.primaryVersion));

  // The stand-in for the leader's election key, which every sweep write compares.
  const fence = 'election/bench-fence';
  await scratch.put(fence).value('bench');
  const fenceRevision = String((await scratch.get(fence).exec()).kvs[0]!.create_revision);
  for (let i = 0; i < records.length; i += COPIES_PER_TXN) {
    const puts = records
      .slice(i, i + COPIES_PER_TXN)
      .flatMap((k) => [scratch.put(paths.key(k.id)).value(JSON.stringify(k)), scratch.put(paths.version(k.id, k.primaryVersion)).value(version)]);
    await scratch.if(fence, 'Create', '==', fenceRevision).then(...puts).commit();
  }

  return async (_worker, seq) => {
    const key = paths.key(records[seq]!.id);
    for (let attempt = 0; attempt < 5; attempt++) {
      const kv = (await scratch.get(key).exec()).kvs[0];
      if (!kv) throw new Error(`${key} vanished`);
      const next = rotatedOnce(JSON.parse(kv.value.toString()) as RotatingRecord);
      const tx = await scratch
        .if(key, 'Mod', '==', kv.mod_revision)
        .and(fence, 'Create', '==', fenceRevision)
        .then(scratch.put(key).value(JSON.stringify(next)), scratch.put(paths.version(next.id, next.primaryVersion)).value(version))
        .commit();
      if (tx.succeeded) return;
    }
    throw new Error(`${key}: compare-and-swap failed 5 times`);
  };
}
