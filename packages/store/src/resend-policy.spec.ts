/**
 * The etcd client resends a failed call only when sending it again cannot apply it twice:
 * reads, lease grants, and calls whose request never went out. Each attempt here plays the part
 * etcd3's connection pool plays: the call-options factory notes the call, then it fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdLeaseInvalidError, GRPCUnavailableError, type CallContext } from 'etcd3';
import { ResendPolicy } from './resend-policy.ts';

const put: CallContext = { service: 'KV', method: 'put', isStream: false, params: { key: Buffer.from('k'), value: Buffer.from('v') } };
const range: CallContext = { service: 'KV', method: 'range', isStream: false, params: { key: Buffer.from('k') } };
const txn = (ops: object[]): CallContext => ({ service: 'KV', method: 'txn', isStream: false, params: { compare: [], success: ops, failure: [{ request_range: { key: Buffer.from('k') } }] } });
const lostAnswer = () => new GRPCUnavailableError('14 UNAVAILABLE: Connection dropped');
const noConnection = () => new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:2379');

/** How many times the policy sends a call that is `call` and fails with `error()` every time. */
async function sends(call: CallContext | undefined, error: () => Error): Promise<number> {
  const policy = new ResendPolicy();
  let n = 0;
  await assert.rejects(
    policy.global.execute(async () => {
      n++;
      if (call) policy.noteCall(call);
      throw error();
    }),
  );
  return n;
}

test('a write whose answer may have been lost is not sent again', async () => {
  assert.equal(await sends(put, lostAnswer), 1);
  assert.equal(await sends(txn([{ request_put: { key: Buffer.from('k'), value: Buffer.from('v') } }]), lostAnswer), 1);
  assert.equal(await sends({ service: 'KV', method: 'deleteRange', isStream: false, params: { key: Buffer.from('k') } }, lostAnswer), 1);
  assert.equal(await sends({ service: 'Lease', method: 'leaseRevoke', isStream: false, params: { ID: '1' } }, lostAnswer), 1);
});

test('reads and lease grants are sent again, three times at most, as etcd3 does by default', async () => {
  assert.equal(await sends(range, lostAnswer), 4);
  assert.equal(await sends(txn([{ request_range: { key: Buffer.from('k') } }]), lostAnswer), 4);
  assert.equal(await sends({ service: 'Lease', method: 'leaseGrant', isStream: false, params: { TTL: 5 } }, lostAnswer), 4);
});

test('a call that never left (no connection, or every circuit open before it was made) is sent again', async () => {
  assert.equal(await sends(put, noConnection), 4);
  assert.equal(await sends(undefined, lostAnswer), 4);
});

test('an answer from etcd is final', async () => {
  assert.equal(await sends(range, () => new EtcdLeaseInvalidError('requested lease not found')), 1);
});

test('a read that succeeds on a resend returns its result', async () => {
  const policy = new ResendPolicy();
  let n = 0;
  const got = await policy.global.execute(async () => {
    policy.noteCall(range);
    if (++n < 3) throw lostAnswer();
    return 'value';
  });
  assert.deepEqual([got, n], ['value', 3]);
});
