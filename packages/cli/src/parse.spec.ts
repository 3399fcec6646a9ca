/** The CLI's flag values: durations and numbers are taken exactly or refused, never read leniently. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from 'commander';
import { describeSeconds, keyValue, MAX_DURATION_SECONDS, oneOf, parseDuration, parseGrant, parseInteger, timestamp } from './parse.ts';

describe('parseDuration', () => {
  it('takes 90s, 15m, 24h, 30d and plain seconds', () => {
    assert.equal(parseDuration('90s'), 90);
    assert.equal(parseDuration('15m'), 900);
    assert.equal(parseDuration('24h'), 86_400);
    assert.equal(parseDuration('30d'), 30 * 86_400);
    assert.equal(parseDuration('86400'), 86_400);
    assert.equal(parseDuration('1d'), 86_400, '1d is a day, not 1 second');
  });

  it('refuses anything else, saying what it expects', () => {
    for (const bad of ['abc', '', '1.5h', '1w', '-5', '1 d', '1d2h', 'd', '0x10', '1e3', '30 days', '1D'])
      assert.throws(() => parseDuration(bad), (e: unknown) => e instanceof InvalidArgumentError && /expected a duration like 90s, 15m, 24h, 30d/.test((e as Error).message), bad);
  });

  it('refuses zero and anything past 100 years, or outside the range given', () => {
    assert.throws(() => parseDuration('0'), /from 1s to/);
    assert.throws(() => parseDuration(`${MAX_DURATION_SECONDS + 1}`), /to 36500d/);
    assert.throws(() => parseDuration('8d', { max: 7 * 86_400 }), /from 1s to 7d, got 8d/);
    assert.equal(parseDuration('0', { min: 0 }), 0);
  });
});

describe('parseInteger', () => {
  it('takes whole numbers within the range', () => {
    assert.equal(parseInteger('30'), 30);
    assert.equal(parseInteger('1', { min: 1, max: 9 }), 1);
  });

  it('refuses what is not a whole number, and numbers out of range', () => {
    for (const bad of ['abc', '', '1.5', '30days', '1e3', '0x1f', ' ', '99999999999999999'])
      assert.throws(() => parseInteger(bad), InvalidArgumentError, bad);
    assert.throws(() => parseInteger('0', { min: 1, max: 9 }), /from 1 to 9, got 0/);
    assert.throws(() => parseInteger('-1'), /at least 0, got -1/);
  });
});

describe('flag value helpers', () => {
  it('keyValue collects name=value pairs and refuses a bare name', () => {
    const label = keyValue('--label name');
    assert.deepEqual(label('b=2', label('a=1')), { a: '1', b: '2' });
    assert.deepEqual(label('url=a=b'), { url: 'a=b' });
    assert.throws(() => label('team'), /expected --label name=value, got "team"/);
    assert.throws(() => label('=x'), InvalidArgumentError);
  });

  it('parseGrant collects op=principal[,principal] per operation and refuses unknown operations and bare words', () => {
    let g = parseGrant('encrypt=app,billing');
    g = parseGrant('decrypt=app', g);
    g = parseGrant('encrypt=ops', g);
    assert.deepEqual(g, { encrypt: ['app', 'billing', 'ops'], decrypt: ['app'] });
    assert.deepEqual(parseGrant('admin='), { admin: [] }, 'an operation granted to nobody');
    for (const bad of ['app', '=app', 'explode=app', 'Encrypt=app']) assert.throws(() => parseGrant(bad), InvalidArgumentError, bad);
  });

  it('timestamp takes RFC 3339 times with an offset, nothing vaguer', () => {
    assert.equal(timestamp('2026-12-06T10:00:00Z'), '2026-12-06T10:00:00Z');
    assert.equal(timestamp('2026-12-06T10:00:00.123+01:00'), '2026-12-06T10:00:00.123+01:00');
    for (const bad of ['yesterday', '2026-12-06', '2026-12-06 10:00:00Z', '2026-13-06T10:00:00Z', '2026-12-06T10:00:00'])
      assert.throws(() => timestamp(bad), /expected an RFC 3339 time/, bad);
  });

  it('oneOf names the words it takes', () => {
    assert.equal(oneOf('pem', 'jwk')('jwk'), 'jwk');
    assert.throws(() => oneOf('pem', 'jwk')('der'), /expected pem \| jwk, got "der"/);
  });

  it('describeSeconds names a duration in its largest whole unit', () => {
    assert.equal(describeSeconds(86_400), '1d');
    assert.equal(describeSeconds(5400), '90m');
    assert.equal(describeSeconds(7200), '2h');
    assert.equal(describeSeconds(61), '61s');
  });
});
