/**
 * The scope table (@keyshard/audit-log appender-scope.ts) against what the producers really
 * record, read from their sources: a coordinator or custodian event outside its own scope would
 * be refused by the sink (and its calls fail closed), so every audited operation must be in it.
 * Reads files as text; imports no service.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { scopeAllows, type AppenderScope } from '@keyshard/audit-log';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function sources(dir: string): { file: string; text: string }[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.spec.ts'))
    .map((f) => ({ file: path.join(dir, f), text: readFileSync(path.join(ROOT, dir, f), 'utf8') }));
}

/** `operation:` of every object literal passed to an audit `.record(` call: its static start (before any `${`). */
function recordedOperations(dir: string): { file: string; op: string; dynamic: boolean }[] {
  const out: { file: string; op: string; dynamic: boolean }[] = [];
  for (const { file, text } of sources(dir)) {
    for (const m of text.matchAll(/\.record\(\s*\{[^}]*?\boperation:\s*(['`])([^'`]*)/gs)) {
      const lit = m[2]!;
      const cut = m[1] === '`' ? lit.indexOf('${') : -1;
      out.push({ file, op: cut >= 0 ? lit.slice(0, cut) : lit, dynamic: cut >= 0 });
    }
  }
  return out;
}

/** The service names a component's RPCs are audited under (`unaryService(…, { name: 'keys', … })` in its main.ts). */
function serviceNames(dir: string): string[] {
  const main = readFileSync(path.join(ROOT, dir, 'main.ts'), 'utf8');
  return [...main.matchAll(/\bname:\s*'([a-z]+)'/g)].map((m) => m[1]!);
}

const inScope = (scope: AppenderScope, op: string, dynamic: boolean) => scopeAllows(scope, dynamic ? `${op}x` : op);

describe('every operation a producer records is in its appender scope', () => {
  it('coordinator: its RPC services and every event it records itself', () => {
    const names = serviceNames('services/coordinator/src');
    assert.deepEqual(names.sort(), ['backup', 'ceremony', 'keys']);
    for (const n of names) assert.ok(scopeAllows('coordinator', `${n}.AnyMethod`), n);
    const ops = recordedOperations('services/coordinator/src');
    assert.ok(ops.length >= 15, `found ${ops.length} recorded operations: the scan must see them`);
    for (const { file, op, dynamic } of ops) {
      assert.ok(op.includes('.'), `${file}: ${op}… names its family before any variable part`);
      assert.ok(inScope('coordinator', op, dynamic), `${file}: ${op}${dynamic ? '…' : ''} is outside the coordinator scope`);
      assert.ok(!inScope('custodian', op, dynamic), `${file}: ${op} would also be a custodian's`);
    }
  });

  it('custodian: its RPC service only, and it records no event of its own', () => {
    assert.deepEqual(serviceNames('services/custodian/src'), ['custodian']);
    assert.ok(scopeAllows('custodian', 'custodian.ProposeCeremony.requested'));
    assert.deepEqual(recordedOperations('services/custodian/src'), []);
  });

  it('the producers\' shared observer records `<service>.<Method>` and `<service>.<Method>.requested` only', () => {
    const ops = recordedOperations('packages/audit-client/src');
    assert.deepEqual(ops.map((o) => [o.op, o.dynamic]), [['', true]], 'observer.ts: the method name, e.g. keys.Encrypt');
    const observer = readFileSync(path.join(ROOT, 'packages/audit-client/src/observer.ts'), 'utf8');
    assert.match(observer, /operation: o\.ctx\.method,/);
    assert.match(observer, /operation: `\$\{ctx\.method\}\.requested`/);
  });
});
