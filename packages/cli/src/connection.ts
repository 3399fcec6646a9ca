/**
 * Where the CLI connects and as whom: flags first, then KEYSHARD_* environment variables.
 * Every server is pinned (@keyshard/rpc server-identity.ts): coordinators by their ids
 * (--coordinator-ids / KEYSHARD_COORDINATOR_IDS, default: the coordinator-<n> naming), a
 * custodian by its id (--custodian-server-id / KEYSHARD_CUSTODIAN_ID, default: the one the operator
 * certificate is named for), the audit sink by --audit-server-id / KEYSHARD_AUDIT_SERVER_ID.
 */
import { KeyshardClient, CustodianOperatorClient } from '@keyshard/client';
import { UsageError } from './output.ts';

export interface ConnectionFlags {
  addr?: string;
  ca?: string;
  tlsCert?: string;
  tlsKey?: string;
  coordinatorIds?: string;
}

/** The coordinator ids to pin, if given (a comma-separated list). */
export function coordinatorIdsFrom(f: ConnectionFlags): string[] | undefined {
  const v = f.coordinatorIds ?? process.env.KEYSHARD_COORDINATOR_IDS;
  if (!v) return undefined;
  const ids = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (ids.length === 0) throw new UsageError('coordinator-ids is empty');
  return ids;
}

function pick(flag: string | undefined, env: string, what: string): string {
  const v = flag ?? process.env[env];
  if (!v) throw new UsageError(`${what} is not set: pass --${what} or set ${env} (e.g. \`. .keyshard/dev/env\`)`);
  return v;
}

export function tlsFrom(f: ConnectionFlags, prefix = 'KEYSHARD') {
  return {
    ca: pick(f.ca, 'KEYSHARD_CA', 'ca'),
    cert: pick(f.tlsCert, `${prefix}_CERT`, 'tls-cert'),
    key: pick(f.tlsKey, `${prefix}_KEY`, 'tls-key'),
  };
}

export function coordinatorClient(f: ConnectionFlags): KeyshardClient {
  return new KeyshardClient({ address: pick(f.addr, 'KEYSHARD_ADDR', 'addr').split(',').map((a) => a.trim()), tls: tlsFrom(f), coordinatorIds: coordinatorIdsFrom(f) });
}

export function custodianClient(f: ConnectionFlags & { custodian?: string; custodianServerId?: string }): CustodianOperatorClient {
  const custodianId = f.custodianServerId ?? process.env.KEYSHARD_CUSTODIAN_ID;
  try {
    return new CustodianOperatorClient({
      address: pick(f.custodian, 'KEYSHARD_CUSTODIAN_ADDR', 'custodian'),
      tls: tlsFrom(f, 'KEYSHARD_CUSTODIAN'),
      ...(custodianId ? { custodianId } : {}),
    });
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`${(e as Error).message} (pass --custodian-server-id or set KEYSHARD_CUSTODIAN_ID)`);
  }
}

/** Runs one call with a coordinator client and closes it, also on error. */
export async function withClient<T>(program: { opts(): ConnectionFlags }, fn: (c: KeyshardClient) => Promise<T>): Promise<T> {
  const client = coordinatorClient(program.opts());
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Runs one call with a custodian operator client and closes it, also on error. */
export async function withCustodian<T>(flags: ConnectionFlags & { custodian?: string; custodianServerId?: string }, fn: (c: CustodianOperatorClient) => Promise<T>): Promise<T> {
  const client = custodianClient(flags);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}
