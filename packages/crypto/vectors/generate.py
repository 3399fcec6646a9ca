#!/usr/bin/python3
"""Generates keyshard's frozen format vectors (packages/crypto/vectors/*.json) from an
implementation that shares no code with keyshard's TypeScript: Python 3.11's hashlib and hmac
(SHA-256, HMAC, HKDF written out from RFC 5869) and pyca/cryptography (>= 38, the Debian 12
package python3-cryptography) for AES-256-GCM, ChaCha20-Poly1305, X25519, Ed25519 and RSA.
HPKE (RFC 9180), RSA-PSS encoding with a fixed salt (RFC 8017 §9.1.1), Shamir sharing over
GF(2^8) and the ECMAScript JSON serialisation are written out here from their specifications.

    /usr/bin/python3 packages/crypto/vectors/generate.py           # (re)writes the files
    /usr/bin/python3 packages/crypto/vectors/generate.py --check   # exit 1 if a file differs

Every input is fixed (derived from a label by `fixed()`), so the output is byte-for-byte the
same on every run: where keyshard draws something at random (nonces, salts, HPKE ephemeral
keys, RSA-PSS salts, Shamir coefficients) the vector names the value used. Every key in the
files is TEST-ONLY: published, so it protects nothing.

Writes canonical-json, ciphertext-v1, key-hierarchy, ceremony, succession, share-manifest,
hpke-share-release and backup-file (.json). join-vouch.json and record-mac.json were made
earlier by another independent implementation and are only read here, as cross-checks.
"""
import base64
import decimal
import hashlib
import hmac
import json
import math
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED_BY = 'packages/crypto/vectors/generate.py (Python 3.11 hashlib/hmac + pyca/cryptography; no keyshard code)'
TEST_ONLY = 'TEST-ONLY: every key and secret in this file is published; never use one to protect anything.'

# ---- primitives ----------------------------------------------------------------------------


def fixed(label, n):
    """n TEST-ONLY bytes named by label: SHA-256 in counter mode (stands for the CSPRNG)."""
    out = b''
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f'keyshard test vector/{label}/{i}'.encode()).digest()
        i += 1
    return out[:n]


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def hmac_sha256(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def hkdf_extract(salt, ikm):  # RFC 5869 §2.2; an empty salt is HashLen zero bytes
    return hmac_sha256(salt if salt else bytes(32), ikm)


def hkdf_expand(prk, info, length):  # RFC 5869 §2.3
    out, t, i = b'', b'', 1
    while len(out) < length:
        t = hmac_sha256(prk, t + info + bytes([i]))
        out += t
        i += 1
    return out[:length]


def hkdf(ikm, salt, info, length):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def subkey(root, purpose, length=32, salt=b''):
    """keyshard's HKDF subkey: info = keyshard/v1/<purpose>."""
    return hkdf(root, salt, f'keyshard/v1/{purpose}'.encode(), length)


def aead_seal(alg, key, nonce, plaintext, aad):
    """ciphertext || tag (16)."""
    return (AESGCM(key) if alg == 'aes-256-gcm' else ChaCha20Poly1305(key)).encrypt(nonce, plaintext, aad)


def u16(n):
    return n.to_bytes(2, 'big')


def u32(n):
    return n.to_bytes(4, 'big')


ED25519_SPKI_PREFIX = bytes.fromhex('302a300506032b6570032100')  # RFC 8410 §4
X25519_SPKI_PREFIX = bytes.fromhex('302a300506032b656e032100')
ED25519_PKCS8_PREFIX = bytes.fromhex('302e020100300506032b657004220420')  # RFC 8410 §7


def pem(kind, der):
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return f'-----BEGIN {kind}-----\n' + '\n'.join(lines) + f'\n-----END {kind}-----\n'


def ed25519_pair(seed):
    sk = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    raw = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sk, ED25519_SPKI_PREFIX + raw


def x25519_public(private):
    return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64(b):
    return base64.b64encode(b).decode()


# ---- ECMAScript JSON (JSON.stringify) and keyshard's canonical JSON ------------------------

ESCAPES = {'"': '\\"', '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t'}


def js_string(s):
    """ECMA-262 QuoteJSONString: escapes ", \\, the C0 controls and lone surrogates, nothing else."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch in ESCAPES:
            out.append(ESCAPES[ch])
        elif c < 0x20 or 0xD800 <= c <= 0xDFFF:
            out.append('\\u%04x' % c)
        else:
            out.append(ch)
    out.append('"')
    return ''.join(out)


def js_number(x):
    """ECMA-262 Number::toString for a finite double: the shortest round-tripping digits."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError('non-finite numbers are refused')
    if x == 0:
        return '0'  # also -0
    if x < 0:
        return '-' + js_number(-x)
    # repr() gives the shortest digits that round-trip, as Number::toString does; value = 0.d1...dk × 10^n
    t = decimal.Decimal(repr(x)).normalize().as_tuple()
    digits = ''.join(map(str, t.digits))
    k = len(digits)
    n = t.exponent + k
    if k <= n <= 21:
        return digits + '0' * (n - k)
    if 0 < n <= 21:
        return digits[:n] + '.' + digits[n:]
    if -6 < n <= 0:
        return '0.' + '0' * (-n) + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + '.' + digits[1:]
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def utf16_key(s):
    return s.encode('utf-16-be', 'surrogatepass')  # byte order of UTF-16BE = code unit order


def js_json(v, canonical):
    """JSON.stringify(v) (member order kept), or keyshard's canonicalJson (members sorted by UTF-16 code units)."""
    if v is None:
        return 'null'
    if v is True:
        return 'true'
    if v is False:
        return 'false'
    if isinstance(v, (int, float)):
        return js_number(v)
    if isinstance(v, str):
        return js_string(v)
    if isinstance(v, list):
        return '[' + ','.join(js_json(x, canonical) for x in v) + ']'
    if isinstance(v, dict):
        keys = sorted(v, key=utf16_key) if canonical else list(v)
        return '{' + ','.join(js_string(k) + ':' + js_json(v[k], canonical) for k in keys) + '}'
    raise TypeError(type(v))


def canonical(v):
    return js_json(v, True)


def canonical_bytes(v):
    return canonical(v).encode('utf-8', 'surrogatepass')


# ---- canonical JSON ------------------------------------------------------------------------


def canonical_json_vectors():
    cases = [
        ('members sorted recursively, no whitespace', {'b': 1, 'a': {'d': [3, {'z': True, 'y': None}], 'c': 'x'}, '': 'empty key sorts first'}),
        ('sort order is UTF-16 code units, not UTF-8 bytes or code points', {'\uff61': 'U+FF61', '\U0001F600': 'U+1F600', 'z': 1, 'Z': 2, '\u00e9': 3, 'aa': 4, 'a': 5}),
        ('string escaping is JSON.stringify: quote, backslash, C0 controls; nothing else', {'s': 'quote " backslash \\ slash / nl \n tab \t cr \r bs \b ff \f nul \u0000 us \u001f del \u007f nbsp \u00a0 ls \u2028 ps \u2029 caf\u00e9 \U0001F600'}),
        ('a lone surrogate is escaped as \\uXXXX (lowercase hex)', ['\ud800', 'a\udfffb']),
        ('numbers are IEEE 754 doubles written by Number::toString', [0, -0.0, 1, -1, 1.0, 1.5, -0.25, 0.1, 1e21, 1e20, 123456789012345680000, 1e-6, 1e-7, 5e-324, 1.7976931348623157e308, 9007199254740991, 9007199254740993]),
        ('scalars and empty containers', [None, True, False, '', [], {}]),
        ('a ceremony-shaped object', {'threshold': 2, 'recipients': [], 'parameters': {'key_id': 'k_AAECAwQFBgcICQoLDA0ODw', 'generation': '1'}, 'operation': 'destroy-key', 'id': 'cer-00000000-0000-4000-8000-000000000003'}),
    ]
    out = []
    for name, value in cases:
        text = canonical(value)
        out.append({'name': name, 'value': value, 'canonical': text, 'sha256': sha256(canonical_bytes(value)).hex()})
    return {
        'description': "keyshard canonical JSON (packages/crypto/src/canonical-json.ts): object members sorted by key in UTF-16 code-unit order, recursively; no whitespace; strings, numbers, true/false/null written as ECMAScript JSON.stringify writes them; undefined object members dropped. Each case's `value` is given with its members deliberately unsorted; `canonical` is the exact output text and `sha256` the SHA-256 of its UTF-8 bytes. Numbers are doubles: 9007199254740993 is read as 9007199254740992.",
        'generated_by': GENERATED_BY,
        'cases': out,
        'refused': ['NaN', 'Infinity', '-Infinity', 'a function, symbol or bigint'],
    }


# ---- the key hierarchy ---------------------------------------------------------------------

ROOT = bytes(range(32))  # the root of join-vouch.json and record-mac.json
CLUSTER_ID = 'c-0123456789abcdef'  # the cluster id of join-vouch.json
KEY_ID = 'k_AAECAwQFBgcICQoLDA0ODw'  # k_ + base64url of 16 bytes, as the keyring makes them


def length_prefixed(*parts):
    out = b''
    for p in parts:
        b = p.encode('utf-8')
        out += u16(len(b)) + b
    return out


def kek_aad(cluster_id, epoch):
    return length_prefixed('keyshard/v1/kek', cluster_id, str(epoch))


def version_aad(cluster_id, key_id, version):
    return length_prefixed('keyshard/v1/kv', cluster_id, key_id, str(version))


def wrap(key, nonce, plaintext, aad):
    return nonce + aead_seal('aes-256-gcm', key, nonce, plaintext, aad)


KEK1 = fixed('kek epoch 1', 32)
KEK12 = fixed('kek epoch 12', 32)
MATERIAL_V1 = fixed('aes256-gcm material k v1', 32)
ED25519_MATERIAL_SEED = fixed('ed25519 material seed', 32)


def key_hierarchy_vectors():
    def kek_case(epoch, kek):
        nonce = fixed(f'kek nonce {epoch}', 12)
        aad = kek_aad(CLUSTER_ID, epoch)
        wrapped = wrap(ROOT, nonce, kek, aad)
        return {'epoch': epoch, 'kek_hex': kek.hex(), 'aad_hex': aad.hex(), 'nonce_hex': nonce.hex(), 'wrapped_hex': wrapped.hex(), 'wrapped_b64': b64(wrapped)}

    def version_case(key_id, version, kek_epoch, kek, material, material_encoding):
        nonce = fixed(f'version nonce {key_id} {version}', 12)
        aad = version_aad(CLUSTER_ID, key_id, version)
        wrapped = wrap(kek, nonce, material, aad)
        return {'key_id': key_id, 'version': version, 'kek_epoch': kek_epoch, 'material_encoding': material_encoding, 'material_hex': material.hex(),
                'aad_hex': aad.hex(), 'nonce_hex': nonce.hex(), 'wrapped_hex': wrapped.hex(), 'wrapped_b64': b64(wrapped)}

    record_mac_key = hkdf(ROOT, CLUSTER_ID.encode(), b'keyshard/v1/record-mac', 32)
    rm_nonce = fixed('record mac key nonce', 12)
    rm_aad = length_prefixed('keyshard/v1/record-mac-key', CLUSTER_ID)
    salt = bytes.fromhex(BACKUP_SALT)
    subkeys = [
        {'purpose': 'manifest-mac', 'salt_hex': '', 'length': 32, 'key_hex': subkey(ROOT, 'manifest-mac').hex(), 'use': 'share manifest MAC key (share-manifest.ts)'},
        {'purpose': 'backup-signing', 'salt_hex': '', 'length': 32, 'key_hex': subkey(ROOT, 'backup-signing').hex(), 'use': 'Ed25519 seed of the backup signer (backup-file.ts)'},
        {'purpose': 'join-vouch', 'salt_hex': '', 'length': 32, 'key_hex': subkey(ROOT, 'join-vouch').hex(), 'use': 'Ed25519 seed of the join-vouch / seal-notice key (join-vouch.ts)'},
        {'purpose': 'backup-encryption', 'salt_hex': salt.hex(), 'length': 32, 'key_hex': subkey(ROOT, 'backup-encryption', 32, salt).hex(), 'use': 'backup chunk key; the salt is the header salt of backup-file.json'},
        {'purpose': 'record-mac', 'salt_hex': CLUSTER_ID.encode().hex(), 'length': 32, 'key_hex': record_mac_key.hex(), 'use': 'record MAC key (deriveRootKey, salt = cluster id; as record-mac.json)'},
    ]
    signing = []
    for purpose in ('backup-signing', 'join-vouch'):
        _, spki = ed25519_pair(subkey(ROOT, purpose))
        signing.append({'purpose': purpose, 'seed_hex': subkey(ROOT, purpose).hex(), 'public_spki_der_b64': b64(spki), 'public_key_pem': pem('PUBLIC KEY', spki)})
    ed_material = ED25519_PKCS8_PREFIX + ED25519_MATERIAL_SEED
    return {
        'description': 'keyshard key hierarchy (packages/crypto/src/key-hierarchy.ts): KEKs wrapped under the root, key-version material wrapped under a KEK, the record MAC key wrapped under the root, each AES-256-GCM (NIST SP 800-38D) as nonce (12) || ciphertext || tag (16) with an AAD of u16-BE-length-prefixed UTF-8 strings binding its position; HKDF-SHA256 (RFC 5869) subkeys with info keyshard/v1/<purpose>; Ed25519 (RFC 8032) keys whose seed is such a subkey. keyshard draws wrap nonces at random: the vectors name the ones used.',
        'generated_by': GENERATED_BY,
        'test_only': TEST_ONLY,
        'root_hex': ROOT.hex(),
        'cluster_id': CLUSTER_ID,
        'keks': [kek_case(1, KEK1), kek_case(12, KEK12)],
        'versions': [
            version_case(KEY_ID, 1, 1, KEK1, MATERIAL_V1, 'raw 32-byte key (aes256-gcm, chacha20-poly1305, hmac-sha256)'),
            version_case('k_ZWQyNTUxOS12ZWN0b3Iga2V5', 3, 12, KEK12, ed_material, 'PKCS#8 DER (ed25519, ecdsa-p256); ecdsa-secp256k1 is the raw 32-byte scalar'),
        ],
        'record_mac_key': {'key_hex': record_mac_key.hex(), 'aad_hex': rm_aad.hex(), 'nonce_hex': rm_nonce.hex(), 'wrapped_hex': wrap(ROOT, rm_nonce, record_mac_key, rm_aad).hex()},
        'subkeys': subkeys,
        'root_signing_keys': signing,
    }


# ---- ciphertext v1 -------------------------------------------------------------------------


def encode_context(ctx):
    entries = sorted(((k.encode('utf-8'), v.encode('utf-8')) for k, v in ctx.items()), key=lambda e: e[0])
    out = u32(len(entries))
    for k, v in entries:
        out += u32(len(k)) + k + u32(len(v)) + v
    return out


def ciphertext_header(key_id, version):
    kid = key_id.encode('ascii')
    return b'ks' + bytes([1, len(kid)]) + kid + u32(version)


def ciphertext_vectors():
    def case(name, alg, key, key_id, version, context, plaintext, use=None):
        nonce = fixed(f'ciphertext nonce {name}', 12)
        header = ciphertext_header(key_id, version)
        ctx = encode_context(context)
        aad = header + ctx
        blob = header + nonce + aead_seal(alg, key, nonce, plaintext, aad)
        c = {'name': name, 'algorithm': alg, 'key_hex': key.hex(), 'key_id': key_id, 'key_version': version, 'context': context,
             'plaintext_hex': plaintext.hex(), 'nonce_hex': nonce.hex(), 'header_hex': header.hex(), 'context_encoding_hex': ctx.hex(),
             'aad_hex': aad.hex(), 'ciphertext_hex': blob.hex(), 'ciphertext_b64': b64(blob)}
        if use:
            c['use'] = use
        return c

    long_id = 'k_' + 'x' * 62
    cases = [
        case('aes-256-gcm, empty context', 'aes-256-gcm', MATERIAL_V1, KEY_ID, 1, {}, b'hello, keyshard'),
        case('aes-256-gcm, context entries sorted by UTF-8 bytes', 'aes-256-gcm', MATERIAL_V1, KEY_ID, 1,
             {'tenant': 'acme', 'purpose': 'billing', '\U0001F600': 'astral', '\uff61': 'halfwidth', 'caf\u00e9': '\u00fc', 'a': ''}, 'plaintext \u00e9\u2713 \x00\x01'.encode()),
        case('aes-256-gcm, empty plaintext, 64-character key id, largest version', 'aes-256-gcm', fixed('material long id', 32), long_id, 0xFFFFFFFF, {'k': 'v'}, b''),
        case('chacha20-poly1305 key: the same framing', 'chacha20-poly1305', fixed('chacha20 material', 32), 'k_Y2hhY2hhMjAtcG9seTEzMDU', 2, {'tenant': 'py'}, b'chacha20-poly1305 (RFC 8439)'),
        case('a data key (GenerateDataKey): ciphertext v1 of the 32 data-key bytes', 'aes-256-gcm', MATERIAL_V1, KEY_ID, 1, {'bucket': 'invoices'}, fixed('data key', 32),
             use='GenerateDataKey / GenerateDataKeyWithoutPlaintext return exactly this kind of ciphertext; there is no other envelope'),
    ]
    good = bytes.fromhex(cases[0]['ciphertext_hex'])
    hlen = 4 + len(KEY_ID) + 4

    def variant(at, value):
        b = bytearray(good)
        b[at] = value
        return bytes(b)

    invalid = [
        {'name': 'empty', 'ciphertext_hex': '', 'error': 'ciphertext is truncated'},
        {'name': 'bad magic', 'ciphertext_hex': variant(0, ord('K')).hex(), 'error': 'not a keyshard ciphertext'},
        {'name': 'format byte 2', 'ciphertext_hex': variant(2, 2).hex(), 'error': 'unsupported ciphertext format 2'},
        {'name': 'key id length 0', 'ciphertext_hex': variant(3, 0).hex(), 'error': 'ciphertext is truncated'},
        {'name': 'shorter than header + nonce + tag', 'ciphertext_hex': good[:hlen + 12 + 15].hex(), 'error': 'ciphertext is truncated'},
        {'name': 'key id with a character outside [A-Za-z0-9_-]', 'ciphertext_hex': variant(5, ord('.')).hex(), 'error': 'ciphertext names an invalid key id'},
        {'name': 'key id longer than 64', 'ciphertext_hex': (ciphertext_header('k_' + 'y' * 63, 1) + bytes(28)).hex(), 'error': 'ciphertext names an invalid key id'},
        {'name': 'key version 0', 'ciphertext_hex': (ciphertext_header(KEY_ID, 0) + good[hlen:]).hex(), 'error': 'ciphertext names key version 0'},
    ]
    c1 = cases[1]
    wrong = [
        {'name': 'context missing', 'case': c1['name'], 'context': {}},
        {'name': 'one entry changed', 'case': c1['name'], 'context': {**c1['context'], 'tenant': 'evil'}},
        {'name': 'one entry added', 'case': c1['name'], 'context': {**c1['context'], 'extra': 'x'}},
        {'name': 'key version changed in the header', 'case': cases[0]['name'], 'context': {}, 'ciphertext_hex': (ciphertext_header(KEY_ID, 2) + good[hlen:]).hex()},
        {'name': 'a flipped tag bit', 'case': cases[0]['name'], 'context': {}, 'ciphertext_hex': (good[:-1] + bytes([good[-1] ^ 1])).hex()},
        {'name': 'a key id byte with its high bit set (keyshard reads the 7-bit character, the AAD keeps the byte)', 'case': cases[0]['name'], 'context': {},
         'ciphertext_hex': variant(4, ord(KEY_ID[0]) | 0x80).hex()},
    ]
    return {
        'description': "keyshard ciphertext format v1 (packages/crypto/src/ciphertext.ts, context.ts, aead.ts): 'ks' | 0x01 | u8 key-id length L | key id (L ASCII bytes, [A-Za-z0-9_-]{1,64}) | u32 BE key version (>= 1) | nonce (12) | ciphertext | tag (16). AEAD = AES-256-GCM (NIST SP 800-38D) or ChaCha20-Poly1305 (RFC 8439) by the key's type, AAD = header (magic .. key version) || context encoding: u32 BE count, then per entry sorted by the key's UTF-8 bytes u32 BE key length, key, u32 BE value length, value. keyshard draws the nonce at random: each case names the one used.",
        'generated_by': GENERATED_BY,
        'test_only': TEST_ONLY,
        'cases': cases,
        'invalid': invalid,
        'authentication_failures': wrong,
    }


# ---- ceremony, approvals, succession ---------------------------------------------------------

CUSTODIANS = ['custodian-1', 'custodian-2', 'custodian-3', 'custodian-4']


def approval_key(custodian_id):
    return ed25519_pair(fixed(f'approval seed {custodian_id}', 32))


def placeholder_pem(what):
    return f'-----BEGIN PUBLIC KEY-----\nTEST-ONLY {what} (opaque to this format)\n-----END PUBLIC KEY-----\n'


RECIPIENT_X25519 = {cid: fixed(f'ephemeral x25519 {cid}', 32) for cid in ('coordinator-1', 'coordinator-2')}


def ceremony_hash(c):
    bound = {
        'id': c['id'], 'operation': c['operation'], 'parameters': c.get('parameters', {}), 'cluster_id': c['cluster_id'],
        'initiator': c['initiator'], 'created_at': c['created_at'], 'expires_at': c['expires_at'], 'nonce': c['nonce'],
        'recipients': [{'coordinator_id': r['coordinator_id'], 'public_key_pem': r['public_key_pem'], 'ephemeral_public_key_pem': r.get('ephemeral_public_key_pem', '')} for r in c.get('recipients', [])],
        'threshold': c['threshold'],
    }
    text = canonical(bound)
    return text, sha256(b'keyshard/v1/ceremony\x00', text.encode('utf-8')).hex()


def ceremony_vectors():
    def ceremony(n, operation, parameters, recipients, **state):
        c = {
            'id': f'cer-00000000-0000-4000-8000-00000000000{n}', 'operation': operation, 'parameters': parameters, 'cluster_id': CLUSTER_ID,
            'initiator': 'admin', 'created_at': '2026-12-06T00:00:00.000Z', 'expires_at': '2026-12-06T01:00:00.000Z' if operation != 'join' else '2026-12-06T00:10:00.000Z',
            'nonce': fixed(f'ceremony nonce {n}', 16).hex(), 'recipients': recipients, 'threshold': 2, 'hash': '',
            'state': 'CEREMONY_STATE_OPEN', 'approved_by': [], 'failures': [], 'denied_by': [], 'error': '',
        }
        c.update(state)
        return c

    def recipient(cid, ephemeral=True):
        r = {'coordinator_id': cid, 'public_key_pem': placeholder_pem(f'RSA transport key of {cid}')}
        if ephemeral:
            r['ephemeral_public_key_pem'] = pem('PUBLIC KEY', X25519_SPKI_PREFIX + x25519_public(RECIPIENT_X25519[cid]))
        return r

    ceremonies = [
        ('unseal: two recipients, each with its per-ceremony X25519 key', ceremony(1, 'unseal', {'generation': '1'}, [recipient('coordinator-1'), recipient('coordinator-2')])),
        ('destroy-key: an approval ceremony, no recipients; state fields are not bound', ceremony(2, 'destroy-key', {'generation': '1', 'key_id': KEY_ID, 'driver': 'coordinator-1'}, [],
                                                                                                      state='CEREMONY_STATE_COMPLETED', approved_by=['custodian-1', 'custodian-2'], error='')),
        ('join: a recipient record without ephemeral_public_key_pem is hashed with ""', ceremony(3, 'join', {'generation': '1'}, [recipient('coordinator-2', ephemeral=False)])),
    ]
    out = []
    for name, c in ceremonies:
        text, h = ceremony_hash(c)
        c['hash'] = h
        out.append({'name': name, 'ceremony': c, 'bound_canonical_json': text, 'hash': h})
    approvals = []
    for cid in ('custodian-1', 'custodian-2'):
        sk, spki = approval_key(cid)
        for v in out[:2]:
            approvals.append({'ceremony': v['name'], 'custodian_id': cid, 'approval_seed_hex': fixed(f'approval seed {cid}', 32).hex(),
                              'approval_public_key_pem': pem('PUBLIC KEY', spki), 'signature_hex': sk.sign(bytes.fromhex(v['hash'])).hex()})
    return {
        'description': 'keyshard ceremony hash and approval signature (packages/crypto/src/ceremony.ts): hash = hex(SHA-256("keyshard/v1/ceremony\\0" || canonical JSON of the bound fields {id, operation, parameters, cluster_id, initiator, created_at, expires_at, nonce, recipients: [{coordinator_id, public_key_pem, ephemeral_public_key_pem}], threshold})); state fields (hash, state, approved_by, failures, denied_by, error) are not bound. A custodian approves with Ed25519 (RFC 8032, pure) over the 32 raw bytes of the hash, signed inside its HSM.',
        'generated_by': GENERATED_BY,
        'test_only': TEST_ONLY,
        'ceremonies': out,
        'approvals': approvals,
    }


def rsa_test_key():
    """A deterministic TEST-ONLY RSA-2048 key (primes searched from fixed bytes, Miller-Rabin)."""
    def probable_prime(n):
        if n % 2 == 0:
            return False
        d, s = n - 1, 0
        while d % 2 == 0:
            d, s = d // 2, s + 1
        for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173):
            x = pow(a, d, n)
            if x in (1, n - 1):
                continue
            for _ in range(s - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                return False
        return True

    def prime(label):
        c = int.from_bytes(fixed(label, 128), 'big') | (3 << 1022) | 1
        while not (probable_prime(c) and math.gcd(65537, c - 1) == 1):
            c += 2
        return c

    p, q = prime('rsa recovery p'), prime('rsa recovery q')
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1) // math.gcd(p - 1, q - 1))
    pub = rsa.RSAPublicNumbers(e, p * q)
    priv = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), pub).private_key()
    return priv


def mgf1(seed, length):
    out, i = b'', 0
    while len(out) < length:
        out += sha256(seed, u32(i))
        i += 1
    return out[:length]


def rsa_pss_sign(priv, message, salt):
    """RSASSA-PSS (RFC 8017 §8.1.1, EMSA-PSS §9.1.1) with SHA-256, MGF1-SHA-256 and a given salt."""
    nums = priv.private_numbers()
    n, d = nums.public_numbers.n, nums.d
    mod_bits = n.bit_length()
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    m_hash = sha256(message)
    h = sha256(bytes(8), m_hash, salt)
    db = bytes(em_len - len(salt) - 32 - 2) + b'\x01' + salt
    masked = bytearray(a ^ b for a, b in zip(db, mgf1(h, em_len - 32 - 1)))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    em = bytes(masked) + h + b'\xbc'
    sig = pow(int.from_bytes(em, 'big'), d, n).to_bytes((mod_bits + 7) // 8, 'big')
    priv.public_key().verify(sig, message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())  # self-check
    return sig


def succession_vectors():
    custodian = 'custodian-2'
    old_sk, old_spki = approval_key(custodian)
    new_sk, new_spki = ed25519_pair(fixed('successor approval seed custodian-2', 32))
    recovery = rsa_test_key()
    rec_spki = recovery.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    rec_pkcs8 = recovery.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fingerprint = sha256(rec_spki).hex()
    statement = b'\x00'.join(x.encode() for x in ('keyshard/v1/custodian-succession', CLUSTER_ID, custodian, fingerprint))
    successor = b'\x00'.join(x.encode() for x in ('keyshard/v1/custodian-successor', CLUSTER_ID, custodian, sha256(new_spki).hex()))
    salt = fixed('pss salt', 32)
    return {
        'description': 'keyshard custodian succession (packages/crypto/src/succession.ts): statement = "keyshard/v1/custodian-succession" \\0 cluster id \\0 custodian id \\0 hex SHA-256 of the recovery key\'s SPKI DER, signed Ed25519 (RFC 8032) by the old approval key; successor message = "keyshard/v1/custodian-successor" \\0 cluster id \\0 custodian id \\0 hex SHA-256 of the new approval key\'s SPKI DER, signed RSASSA-PSS (RFC 8017 §8.1) SHA-256, MGF1-SHA-256, 32-byte salt by the recovery key. PSS is randomized: the certificate here used the salt named, any salt verifies.',
        'generated_by': GENERATED_BY,
        'test_only': TEST_ONLY,
        'cluster_id': CLUSTER_ID,
        'custodian_id': custodian,
        'old_approval_seed_hex': fixed(f'approval seed {custodian}', 32).hex(),
        'old_approval_public_key_pem': pem('PUBLIC KEY', old_spki),
        'recovery_private_key_pem': pem('PRIVATE KEY', rec_pkcs8),
        'recovery_public_key_pem': pem('PUBLIC KEY', rec_spki),
        'recovery_key_fingerprint': fingerprint,
        'statement_hex': statement.hex(),
        'statement_signature_hex': old_sk.sign(statement).hex(),
        'new_approval_seed_hex': fixed('successor approval seed custodian-2', 32).hex(),
        'new_approval_public_key_pem': pem('PUBLIC KEY', new_spki),
        'successor_message_hex': successor.hex(),
        'pss_salt_hex': salt.hex(),
        'certificate_hex': rsa_pss_sign(recovery, successor, salt).hex(),
    }


# ---- share manifest ------------------------------------------------------------------------


def gf_mul(a, b):  # GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (0x11b)
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return r


def gf_inv(a):
    r = 1
    for _ in range(254):
        r = gf_mul(r, a)
    return r


def shamir_split(secret, xs, threshold, label):
    """Per secret byte a random polynomial of degree t-1 with that byte as constant term; share = y bytes || x."""
    coeffs = [[s] + list(fixed(f'{label} coefficients byte {i}', threshold - 1)) for i, s in enumerate(secret)]
    shares = []
    for x in xs:
        ys = bytearray()
        for poly in coeffs:
            y = 0
            for c in reversed(poly):
                y = gf_mul(y, x) ^ c
            ys.append(y)
        shares.append(bytes(ys) + bytes([x]))
    return coeffs, shares


def shamir_combine(shares):
    xs = [s[-1] for s in shares]
    out = bytearray()
    for i in range(len(shares[0]) - 1):
        acc = 0
        for j, sj in enumerate(shares):
            basis = 1
            for m, xm in enumerate(xs):
                if m != j:
                    basis = gf_mul(basis, gf_mul(xm, gf_inv(xm ^ xs[j])))
            acc ^= gf_mul(sj[i], basis)
        out.append(acc)
    return bytes(out)


def peers_digest(threshold, custodians):
    pairs = sorted(([c['id'], c['approvalPublicKeyPem'].strip()] for c in custodians), key=lambda p: utf16_key(p[0]))
    text = canonical({'threshold': threshold, 'custodians': pairs})
    return text, sha256(b'keyshard/v1/share-set-peers\x00', text.encode()).hex()


def manifest_case(name, ids, xs, threshold, generation):
    label = f'shamir generation {generation}'
    coeffs, shares = shamir_split(ROOT, xs, threshold, label)
    assert shamir_combine(shares[:threshold]) == ROOT and shamir_combine(shares[-threshold:]) == ROOT
    custodians = []
    for cid, share in zip(ids, shares):
        custodians.append({'id': cid, 'enrollmentPublicKeyPem': placeholder_pem(f'RSA enrollment key of {cid}'),
                           'approvalPublicKeyPem': pem('PUBLIC KEY', approval_key(cid)[1]), 'x': share[-1],
                           'commitment': sha256(b'keyshard/v1/share-commitment\x00', CLUSTER_ID.encode(), b'\x00', share).hex()})
    body = {'version': 1, 'clusterId': CLUSTER_ID}
    if generation > 1:
        body['generation'] = generation
    body.update({'threshold': threshold, 'createdAt': '2026-12-06T00:00:00.000Z', 'custodians': custodians,
                 'kcv': hmac_sha256(ROOT, b'keyshard/v1/key-check-value').hex(),
                 'vouchPublicKeyPem': pem('PUBLIC KEY', ed25519_pair(subkey(ROOT, 'join-vouch'))[1])})
    mac_key = subkey(ROOT, 'manifest-mac')
    body_json = canonical(body)
    manifest = {**body, 'mac': hmac_sha256(mac_key, body_json.encode()).hex()}
    peers_json, peers = peers_digest(threshold, custodians)
    return {
        'name': name,
        'shares': [{'custodian_id': cid, 'share_hex': s.hex()} for cid, s in zip(ids, shares)],
        'polynomial_coefficients_hex': [bytes(c).hex() for c in coeffs],
        'mac_input_canonical_json': body_json,
        'manifest': manifest,
        'fingerprint': sha256(canonical_bytes(manifest)).hex(),
        'peers_canonical_json': peers_json,
        'peers_digest': peers,
    }


def share_manifest_vectors():
    return {
        'description': 'keyshard share manifest (packages/crypto/src/share-manifest.ts). Shares: Shamir over GF(2^8) modulo x^8+x^4+x^3+x+1, one polynomial per root byte (constant term = the byte), share = 32 y bytes || x (x != 0). commitment = hex SHA-256("keyshard/v1/share-commitment\\0" || cluster id || "\\0" || share). kcv = hex HMAC-SHA256(root, "keyshard/v1/key-check-value") (RFC 2104). mac = hex HMAC-SHA256(HKDF-SHA256(root, salt empty, info "keyshard/v1/manifest-mac", 32), canonical JSON of the manifest without mac). fingerprint = hex SHA-256(canonical JSON of the whole manifest, mac included). peers digest = hex SHA-256("keyshard/v1/share-set-peers\\0" || canonical JSON {threshold, custodians: [[id, trimmed approval key PEM]] sorted by id}). keyshard draws the polynomial coefficients and the x coordinates at random: the vectors name the ones used.',
        'generated_by': GENERATED_BY,
        'test_only': TEST_ONLY,
        'root_hex': ROOT.hex(),
        'cluster_id': CLUSTER_ID,
        'kcv': hmac_sha256(ROOT, b'keyshard/v1/key-check-value').hex(),
        'manifest_mac_key_hex': subkey(ROOT, 'manifest-mac').hex(),
        'manifests': [
            manifest_case('generation 1 (init): 2 of 3, no generation member', CUSTODIANS[:3], [0x2A, 0x07, 0xC3], 2, 1),
            manifest_case('generation 2 (a reshare): 3 of 4, generation member present', CUSTODIANS, [0x01, 0x80, 0xFF, 0x5D], 3, 2),
        ],
    }


# ---- HPKE share release ----------------------------------------------------------------------


def hpke_seal_base(pk_r, sk_e, info, aad, plaintext, aead_id, nk):
    """RFC 9180 base mode single-shot Seal, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-GCM."""
    kem_suite = b'KEM' + u16(0x0020)
    hpke_suite = b'HPKE' + u16(0x0020) + u16(0x0001) + u16(aead_id)

    def labeled_extract(suite, salt, label, ikm):
        return hkdf_extract(salt, b'HPKE-v1' + suite + label + ikm)

    def labeled_expand(suite, prk, label, info_, length):
        return hkdf_expand(prk, u16(length) + b'HPKE-v1' + suite + label + info_, length)

    enc = x25519_public(sk_e)
    dh = x25519.X25519PrivateKey.from_private_bytes(sk_e).exchange(x25519.X25519PublicKey.from_public_bytes(pk_r))
    shared = labeled_expand(kem_suite, labeled_extract(kem_suite, b'', b'eae_prk', dh), b'shared_secret', enc + pk_r, 32)
    ks_context = b'\x00' + labeled_extract(hpke_suite, b'', b'psk_id_hash', b'') + labeled_extract(hpke_suite, b'', b'info_hash', info)
    secret = labeled_extract(hpke_suite, shared, b'secret', b'')
    key = labeled_expand(hpke_suite, secret, b'key', ks_context, nk)
    base_nonce = labeled_expand(hpke_suite, secret, b'base_nonce', ks_context, 12)
    ct = AESGCM(key).encrypt(base_nonce, plaintext, aad)  # sequence 0: nonce = base_nonce
    return {'enc': enc, 'shared_secret': shared, 'key': key, 'base_nonce': base_nonce, 'ct': ct}


def check_hpke_against_rfc9180():
    """RFC 9180 Appendix A.1.1 (X25519, HKDF-SHA256, AES-128-GCM, base mode), first encryption."""
    pk_r = x25519_public(bytes.fromhex('4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8'))
    assert pk_r.hex() == '3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d'
    r = hpke_seal_base(pk_r, bytes.fromhex('52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736'),
                       bytes.fromhex('4f6465206f6e2061204772656369616e2055726e'), b'Count-0', b'Beauty is truth, truth beauty', 0x0001, 16)
    assert r['enc'].hex() == '37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431'
    assert r['shared_secret'].hex() == 'fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc'
    assert r['key'].hex() == '4531685d41d65f03dc48f6b8302c05b0' and r['base_nonce'].hex() == '56d890e5accaaf011cff4b7d'
    assert r['ct'].hex() == 'f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a'


def hpke_vectors(ceremony):
    check_hpke_against_rfc9180()
    c = ceremony['ceremonies'][0]
    recipient = 'coordinator-1'
    sk_r = RECIPIENT_X25519[recipient]
    pk_r = x25519_public(sk_r)
    custodian = 'custodian-1'
    info = f"keyshard/v1/share-release\x00{c['hash']}\x00{recipient}".encode()
    aad = f'keyshard/v1/share-release-custodian\x00{custodian}'.encode()
    plaintext = fixed('rsa-oaep wrapped share stand-in', 256)
    sk_e = fixed('hpke sender ephemeral', 32)
    r = hpke_seal_base(pk_r, sk_e, info, aad, plaintext, 0x0002, 32)
    return {
        'description': "keyshard share-release layer (packages/crypto/src/hpke.ts): RFC 9180 HPKE, mode base, DHKEM(X25519, HKDF-SHA256) 0x0020 / HKDF-SHA256 0x0001 / AES-256-GCM 0x0002, single-shot Seal (sequence 0). sealed = enc (32) || ciphertext || tag (16). info = \"keyshard/v1/share-release\\0\" || ceremony hash (64 hex characters) || \"\\0\" || recipient coordinator id; aad = \"keyshard/v1/share-release-custodian\\0\" || custodian id (UTF-8). The plaintext stands for the RSA-OAEP-wrapped share (256 bytes, RSA-2048). keyshard draws the sender's ephemeral key at random: this is a decryption vector, and sender_ephemeral_private_key_hex only says how it was made. The generator first reproduces RFC 9180 Appendix A.1.1.",
        'generated_by': GENERATED_BY,
        'test_only': TEST_ONLY,
        'suite': {'mode': 0, 'kem_id': 0x0020, 'kdf_id': 0x0001, 'aead_id': 0x0002},
        'binding': {'ceremonyHash': c['hash'], 'coordinatorId': recipient, 'custodianId': custodian, 'ceremony': c['name']},
        'recipient_private_key_hex': sk_r.hex(),
        'recipient_public_key_hex': pk_r.hex(),
        'recipient_public_key_pem': pem('PUBLIC KEY', X25519_SPKI_PREFIX + pk_r),
        'info_hex': info.hex(),
        'aad_hex': aad.hex(),
        'plaintext_hex': plaintext.hex(),
        'sender_ephemeral_private_key_hex': sk_e.hex(),
        'shared_secret_hex': r['shared_secret'].hex(),
        'key_hex': r['key'].hex(),
        'base_nonce_hex': r['base_nonce'].hex(),
        'sealed_hex': (r['enc'] + r['ct']).hex(),
    }


# ---- backup file ---------------------------------------------------------------------------

BACKUP_SALT = fixed('backup salt', 32).hex()
CHUNK_BYTES = 64 * 1024


def backup_file(manifest_vector, entries):
    manifest = manifest_vector['manifest']
    signing_sk, signing_spki = ed25519_pair(subkey(ROOT, 'backup-signing'))
    header = {'format': 'keyshard-backup', 'version': 1, 'cluster': 'dev', 'clusterId': CLUSTER_ID, 'revision': '1234',
              'createdAt': '2026-12-06T00:00:00.000Z', 'entries': len(entries), 'manifest': manifest,
              'manifestFingerprint': manifest_vector['fingerprint'], 'salt': BACKUP_SALT, 'signer': b64(signing_spki)}
    header_json = js_json(header, False)
    header_bytes = header_json.encode()
    aad = sha256(b'KSHARDB1', header_bytes)
    key = subkey(ROOT, 'backup-encryption', 32, bytes.fromhex(BACKUP_SALT))
    out = b'KSHARDB1' + u32(len(header_bytes)) + header_bytes
    chunks, pending = [], b''
    for k, v in entries:  # a chunk closes once it holds at least CHUNK_BYTES
        kb = k.encode()
        pending += u16(len(kb)) + u32(len(v)) + kb + v
        if len(pending) >= CHUNK_BYTES:
            chunks.append(pending)
            pending = b''
    chunks.append(pending)  # the last chunk, possibly empty
    described = []
    for i, plain in enumerate(chunks):
        last = i == len(chunks) - 1
        nonce = bytes(5) + i.to_bytes(6, 'big') + bytes([1 if last else 0])
        sealed = aead_seal('aes-256-gcm', key, nonce, plain, aad)
        out += u32(len(sealed)) + sealed
        described.append({'index': i, 'last': last, 'nonce_hex': nonce.hex(), 'plaintext_length': len(plain), 'frame_length': len(sealed), 'plaintext_sha256': sha256(plain).hex()})
    out += u32(0xFFFFFFFF)
    digest = sha256(out)
    signature = signing_sk.sign(b'keyshard/v1/backup-signature\x00' + digest)
    out += signature
    return {
        'header_json': header_json,
        'header_digest_hex': aad.hex(),
        'chunks': described,
        'signed_digest_hex': digest.hex(),
        'signature_hex': signature.hex(),
        'file_sha256': sha256(out).hex(),
        'file_b64': b64(out),
    }


def backup_vectors(manifests, hierarchy):
    kek = hierarchy['keks'][0]
    kek_record = js_json({'epoch': kek['epoch'], 'wrapped': kek['wrapped_b64']}, False).encode()
    manifest_vector = manifests['manifests'][0]
    small = [('cluster', b'{"clusterId":"c-0123456789abcdef"}'), ('keks/1', kek_record), (f'keys/{KEY_ID}', bytes(range(256)))]
    first = [('cluster', b'{"clusterId":"c-0123456789abcdef"}')]
    used = sum(6 + len(k.encode()) + len(v) for k, v in first)
    big_key = f'versions/{KEY_ID}/1'
    first.append((big_key, bytes([0x5A]) * (CHUNK_BYTES - used - 6 - len(big_key))))  # chunk 0 holds exactly 64 KiB
    two = first + [('keks/1', kek_record), ('names/payroll', KEY_ID.encode())]

    def describe(entries):
        out = []
        for k, v in entries:
            if len(v) > 1024 and len(set(v)) == 1:
                out.append({'key': k, 'value_fill': {'byte_hex': v[:1].hex(), 'length': len(v)}})
            else:
                out.append({'key': k, 'value_hex': v.hex()})
        return out

    files = []
    for name, entries in (('one chunk', small), ('no entries: one empty last chunk', []), ('two chunks: the first closes at 64 KiB', two)):
        files.append({'name': name, 'entries': describe(entries), **backup_file(manifest_vector, entries)})
    _, signing_spki = ed25519_pair(subkey(ROOT, 'backup-signing'))
    return {
        'description': 'keyshard backup file (packages/crypto/src/backup-file.ts): "KSHARDB1" | u32 BE n | header (n bytes of UTF-8 JSON, as written; hashed as is, never re-serialised) | frames: u32 BE m | m bytes = AES-256-GCM ciphertext || tag of one chunk (the nonce is implied) | u32 0xFFFFFFFF | 64-byte Ed25519 signature. Chunk key = HKDF-SHA256(root, salt = the header salt (32 bytes from hex), info "keyshard/v1/backup-encryption", 32); chunk nonce = 11-byte BE chunk index || last-chunk flag (STREAM); chunk AAD = SHA-256("KSHARDB1" || header bytes). A chunk is a run of entries: u16 BE key length, u32 BE value length, key (UTF-8), value. Signature: Ed25519 (RFC 8032) by the seed HKDF-SHA256(root, salt empty, info "keyshard/v1/backup-signing") over "keyshard/v1/backup-signature\\0" || SHA-256(every byte before the signature, the 0xFFFFFFFF mark included). Entry values are opaque to the format. keyshard draws the salt at random: the vectors name the one used.',
        'generated_by': GENERATED_BY,
        'test_only': TEST_ONLY,
        'root_hex': ROOT.hex(),
        'salt_hex': BACKUP_SALT,
        'chunk_key_hex': subkey(ROOT, 'backup-encryption', 32, bytes.fromhex(BACKUP_SALT)).hex(),
        'signer': b64(signing_spki),
        'chunk_bytes': CHUNK_BYTES,
        'files': files,
    }


# ---- main ----------------------------------------------------------------------------------


def cross_check():
    """The root and cluster id are those of the earlier vectors: what both define must agree."""
    with open(os.path.join(HERE, 'join-vouch.json')) as f:
        jv = json.load(f)
    assert jv['root_hex'] == ROOT.hex() and jv['ceremony']['cluster_id'] == CLUSTER_ID
    assert jv['vouch_public_key_pem'] == pem('PUBLIC KEY', ed25519_pair(subkey(ROOT, 'join-vouch'))[1]), 'join-vouch key'
    with open(os.path.join(HERE, 'record-mac.json')) as f:
        rm = json.load(f)
    assert rm['derived'][0]['key_hex'] == hkdf(ROOT, rm['cluster_id'].encode(), b'keyshard/v1/record-mac', 32).hex(), 'record-mac key'


def build():
    cross_check()
    hierarchy = key_hierarchy_vectors()
    ceremony = ceremony_vectors()
    manifests = share_manifest_vectors()
    return {
        'canonical-json.json': canonical_json_vectors(),
        'ciphertext-v1.json': ciphertext_vectors(),
        'key-hierarchy.json': hierarchy,
        'ceremony.json': ceremony,
        'succession.json': succession_vectors(),
        'share-manifest.json': manifests,
        'hpke-share-release.json': hpke_vectors(ceremony),
        'backup-file.json': backup_vectors(manifests, hierarchy),
    }


def main(argv):
    check = '--check' in argv
    differ = []
    for name, doc in build().items():
        text = json.dumps(doc, indent=2, ensure_ascii=True) + '\n'
        path = os.path.join(HERE, name)
        if check:
            try:
                with open(path) as f:
                    same = f.read() == text
            except FileNotFoundError:
                same = False
            if not same:
                differ.append(name)
        else:
            with open(path, 'w') as f:
                f.write(text)
    if differ:
        print('differ from the generator: ' + ', '.join(differ), file=sys.stderr)
        return 1
    print('checked' if check else 'written', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
