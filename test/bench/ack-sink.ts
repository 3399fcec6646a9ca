/**
 * Diagnostics for test/bench/encrypt.ts (BENCH_AUDIT=ack): a stand-in audit sink that
 * acknowledges every Append batch at once, storing nothing. Pointing the coordinator at it
 * shows what Encrypt would do if the durable audit round trip cost nothing. Same mutual TLS
 * as the real sink (the audit-sink certificate, client certificate required), and real signed
 * checkpoints with consistency proofs under the sink's checkpoint key, as producers verify them
 * (its tree holds a constant leaf per event: no event is hashed or kept).
 *
 *   node --conditions=keyshard-source --import tsx test/bench/ack-sink.ts --ca CA --cert CERT --key KEY --checkpoint-key PEM [--listen 127.0.0.1:0]
 * Prints {"listening":"host:port"} when ready; exits 0 on SIGTERM/SIGINT.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { MerkleTree, keyIdOf, leafHash, signCheckpoint, toCheckpointMsg } from '@keyshard/audit-log';
import { keyshardProto, readTls, serverCredentials, serverOptions } from '@keyshard/rpc';
import { parseFlags, required } from './common.ts';

const flags = parseFlags(process.argv.slice(2));
const tls = readTls({ ca: required(flags, 'ca'), cert: required(flags, 'cert'), key: required(flags, 'key') });
const listen = flags.listen ?? '127.0.0.1:0';
const server = new grpc.Server(serverOptions(16 * 1024 * 1024));
const signingKey = createPrivateKey(readFileSync(required(flags, 'checkpoint-key')));
const keyId = keyIdOf(createPublicKey(signingKey));
const tree = new MerkleTree();
const LEAF = leafHash('ack-sink');
server.addService(keyshardProto().AuditService.service, {
  Append(call: grpc.ServerDuplexStream<{ events?: unknown[]; batch?: string; known_tree_size?: string }, unknown>) {
    call.on('data', (req) => {
      const count = req.events?.length ?? 0;
      const first = tree.size;
      for (let i = 0; i < count; i++) tree.appendLeafHash(LEAF);
      const known = Number(req.known_tree_size ?? 0);
      const cp = signCheckpoint(signingKey, keyId, tree.size, tree.root());
      call.write({
        batch: req.batch ?? '0', first_index: String(first), count: String(count), head_hash: cp.root_hash, tree_size: String(cp.tree_size),
        checkpoint: toCheckpointMsg(cp), consistency_proof: known > 0 && known < tree.size ? tree.consistencyProof(known, tree.size) : [],
      });
    });
    call.on('end', () => call.end());
  },
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync(listen, serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p))),
);
process.stdout.write(`${JSON.stringify({ listening: `${listen.slice(0, listen.lastIndexOf(':'))}:${port}` })}\n`);
const stop = () => {
  server.forceShutdown();
  process.exit(0);
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
