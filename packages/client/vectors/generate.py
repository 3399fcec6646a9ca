#!/usr/bin/python3
"""Generates the frozen vectors of the keyshard envelope format (packages/client/vectors/
envelope.json) from an implementation that shares no code with keyshard's TypeScript: the
layout, the STREAM nonces and the context encoding are written out here from
packages/client/VECTORS.md; AES-256-GCM is pyca/cryptography's (>= 38, Debian 12's
python3-cryptography), SHA-256 Python's hashlib.

    /usr/bin/python3 packages/client/vectors/generate.py           # (re)writes the file
    /usr/bin/python3 packages/client/vectors/generate.py --check   # exit 1 if it differs

Only the local layer is frozen: the data key is fixed and the wrapped data key (in keyshard a
ciphertext v1 from GenerateDataKey, frozen by packages/crypto/vectors/ciphertext-v1.json) is
opaque bytes here. Every input is fixed (derived from a label by `fixed()`), so the output is
the same on every run; where the SDK draws a value at random (the nonce prefix) the vector
names it. Every key in the file is TEST-ONLY: published, so it protects nothing.
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED_BY = 'packages/client/vectors/generate.py (Python 3.11 hashlib + pyca/cryptography AES-GCM; no keyshard code)'
TEST_ONLY = 'TEST-ONLY: every key and secret in this file is published; never use one to protect anything.'

MAGIC = b'KSEN'
VERSION = 1
AES_256_GCM = 1
TAG = 16
MIN_SEGMENT, MAX_SEGMENT = 64, 16 * 1024 * 1024
MAX_WRAPPED = 1024


def fixed(label, n):
    """n TEST-ONLY bytes named by label: SHA-256 in counter mode (stands for the CSPRNG)."""
    out, i = b'', 0
    while len(out) < n:
        out += hashlib.sha256(f'keyshard envelope test vector/{label}/{i}'.encode()).digest()
        i += 1
    return out[:n]


def u16(n):
    return n.to_bytes(2, 'big')


def u32(n):
    return n.to_bytes(4, 'big')


def encode_context(ctx):
    """packages/crypto/VECTORS.md, "Encryption context encoding": sorted by the key's UTF-8 bytes."""
    out = u32(len(ctx))
    for k, v in sorted(((k.encode(), v.encode()) for k, v in ctx.items()), key=lambda kv: kv[0]):
        out += u32(len(k)) + k + u32(len(v)) + v
    return out


def header(segment_size, prefix, wrapped, magic=MAGIC, version=VERSION, algorithm=AES_256_GCM, wrapped_len=None):
    assert len(prefix) == 7
    return magic + bytes([version, algorithm]) + u32(segment_size) + prefix + u16(len(wrapped) if wrapped_len is None else wrapped_len) + wrapped


def nonce(prefix, index, last):
    return prefix + u32(index) + bytes([1 if last else 0])


def split(plaintext, segment_size):
    """Segments as the format requires: full ones, then a last one of 1..S bytes (0 only if empty)."""
    if not plaintext:
        return [b'']
    return [plaintext[i:i + segment_size] for i in range(0, len(plaintext), segment_size)]


DATA_KEY = fixed('data key', 32)
# Opaque here: in keyshard, the ciphertext v1 GenerateDataKey returned (about 90 bytes).
WRAPPED_KEY = b'ks\x01' + fixed('wrapped data key', 89)


def seal(plaintext, ctx, segment_size, prefix, pieces=None, key=DATA_KEY, wrapped=WRAPPED_KEY):
    """The envelope, and a description of its segments. `pieces` overrides the segmenting (for refusal vectors)."""
    h = header(segment_size, prefix, wrapped)
    aad = hashlib.sha256(h + encode_context(ctx)).digest()
    parts = split(plaintext, segment_size) if pieces is None else pieces
    out, segments = h, []
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        n = nonce(prefix, i, last)
        sealed = AESGCM(key).encrypt(n, p, aad)
        segments.append({'index': i, 'last': last, 'nonce_hex': n.hex(), 'plaintext_length': len(p), 'sealed_length': len(sealed)})
        out += sealed
    return out, h, aad, segments


def pattern(n):
    return bytes(i % 251 for i in range(n))


CASES = [
    # name, context, plaintext (bytes, or ('pattern', n)), segment size
    ('empty plaintext: one empty last segment', {}, b'', 64),
    ('one short segment, with a context', {'tenant': 'acme', 'purpose': 'invoices'}, b'attack at dawn', 64),
    ('exactly two full segments: the last one is full', {'tenant': 'acme'}, ('pattern', 128), 64),
    ('three segments, the last partial; non-ASCII context', {'r\u00e9gion': 'Z\u00fcrich', 'a': '', 'b': 'x'}, ('pattern', 150), 64),
    ('the default segment size (64 KiB): two segments', {'file': 'backup.tar'}, ('pattern', 65536 + 100), 65536),
]


def case_vector(i, name, ctx, plaintext, segment_size):
    described = {'plaintext_hex': plaintext.hex()} if len(plaintext) <= 1024 else {'plaintext_pattern': {'length': len(plaintext), 'byte_i': 'i % 251'}}
    prefix = fixed(f'nonce prefix {i}', 7)
    env, h, aad, segments = seal(plaintext, ctx, segment_size, prefix)
    return {
        'name': name,
        'context': ctx,
        'context_encoding_hex': encode_context(ctx).hex(),
        'segment_size': segment_size,
        'nonce_prefix_hex': prefix.hex(),
        **described,
        'header_hex': h.hex(),
        'aad_hex': aad.hex(),
        'segments': segments,
        'envelope_sha256': hashlib.sha256(env).hexdigest(),
        'envelope_b64': base64.b64encode(env).decode(),
    }


def plaintext_of(p):
    return pattern(p[1]) if isinstance(p, tuple) else p


def refusals():
    """Envelopes a reader must refuse, each with a phrase of the SDK's message (not a format field)."""
    ctx = {'tenant': 'acme', 'purpose': 'invoices'}
    prefix = fixed('nonce prefix refusals', 7)
    good, h, _, _ = seal(b'attack at dawn', ctx, 64, prefix)
    body = good[len(h):]
    three_ctx = {'tenant': 'acme'}
    three_prefix = fixed('nonce prefix refusals 3', 7)
    three, h3, _, segs = seal(pattern(150), three_ctx, 64, three_prefix)
    s0, s1, s2 = three[len(h3):len(h3) + 80], three[len(h3) + 80:len(h3) + 160], three[len(h3) + 160:]
    assert [s['sealed_length'] for s in segs] == [80, 80, 38]

    def flip(b, at):
        b = bytearray(b)
        b[at] ^= 1
        return bytes(b)

    # Structure, on the one-segment envelope: the header's refusals come before keyshard is asked
    # to unwrap the data key (before_unwrapping), the others after.
    structural = [
        ('bad magic', header(64, prefix, WRAPPED_KEY, magic=b'KSEM') + body, 'bad magic'),
        ('unknown version 2', header(64, prefix, WRAPPED_KEY, version=2) + body, 'unknown version 2'),
        ('unknown algorithm 2', header(64, prefix, WRAPPED_KEY, algorithm=2) + body, 'unknown algorithm 2'),
        ('segment size 63, below the minimum', header(63, prefix, WRAPPED_KEY) + body, 'segment size 63'),
        ('segment size 16 MiB + 1, above the maximum', header(MAX_SEGMENT + 1, prefix, WRAPPED_KEY) + body, 'segment size 16777217'),
        ('wrapped key length 0', header(64, prefix, b'') + body, 'wrapped data key length 0'),
        ('wrapped key length 1025', header(64, prefix, b'\x00' * 1025) + body, 'wrapped data key length 1025'),
        ('empty input', b'', 'empty input'),
        ('the header cut short (18 bytes)', good[:18], 'the header is cut short'),
        ('the header cut inside the wrapped key', good[:len(h) - 1], 'the header is cut short'),
        ('a header and no segment', h, 'no segment after the header'),
        ('a header and 15 bytes: shorter than a tag', h + body[:15], 'no segment after the header'),
    ]
    # Authentication (after keyshard unwrapped the data key, with the right context unless said).
    authentication = [
        ('a ciphertext bit of segment 1 flipped', flip(three, len(h3) + 80 + 5), three_ctx, 'segment 1 could not be authenticated'),
        ('a tag bit of the last segment flipped', three[:-1] + flip(three[-1:], 0), three_ctx, 'segment 2 (the last one read) could not be authenticated'),
        ('a nonce-prefix bit of the header flipped', flip(three, 10), three_ctx, 'segment 0 could not be authenticated'),
        ('another context', three, {'tenant': 'umbrella'}, 'segment 0 could not be authenticated'),
        ('segments 0 and 1 swapped', h3 + s1 + s0 + s2, three_ctx, 'segment 0 could not be authenticated'),
        ('segment 1 duplicated', h3 + s0 + s1 + s1 + s2, three_ctx, 'segment 2 could not be authenticated'),
        ('the last segment dropped (cut at a segment boundary)', h3 + s0 + s1, three_ctx, 'segment 1 (the last one read) could not be authenticated'),
        ('the last byte removed', three[:-1], three_ctx, 'segment 2 (the last one read) could not be authenticated'),
        ('one byte appended', three + b'\x00', three_ctx, 'segment 2 (the last one read) could not be authenticated'),
    ]
    # Authentic but not in the one form the format allows: refused all the same.
    two_full, h2, _, _ = seal(pattern(128), three_ctx, 64, three_prefix, pieces=[pattern(128)[:64], pattern(128)[64:], b''])
    noncanonical = [
        ('an empty last segment after full ones (sealed with the right key)', two_full, three_ctx, 'an empty last segment after full ones'),
    ]
    return {
        'context': ctx,
        'three_segment_context': three_ctx,
        'structural': [{'name': n, 'envelope_hex': e.hex(), 'message': m, 'before_unwrapping': i < len(structural) - 2} for i, (n, e, m) in enumerate(structural)],
        'authentication': [{'name': n, 'envelope_hex': e.hex(), 'context': c, 'message': m} for n, e, c, m in authentication + noncanonical],
    }


def build():
    return {
        'envelope.json': {
            'description': (
                'keyshard envelope (packages/client/src/envelope.ts; format in packages/client/VECTORS.md): header = "KSEN" | u8 version 1 | '
                'u8 algorithm 1 (AES-256-GCM) | u32 BE segment size S (64..16 MiB) | nonce prefix (7) | u16 BE L (1..1024) | wrapped data key (L bytes, '
                'opaque here); then segments, each AES-256-GCM ciphertext || tag (16) of S plaintext bytes, the last of 1..S bytes (0 only for an empty '
                'plaintext). Segment i nonce = prefix || u32 BE i || u8 last-segment flag (STREAM, Hoang-Reyhanitabar-Rogaway-Vizar 2015, as Tink). '
                'Every segment\'s AAD = SHA-256(header bytes || encryption context encoding). The data key is fixed; the wrapped key is opaque bytes.'
            ),
            'generated_by': GENERATED_BY,
            'test_only': TEST_ONLY,
            'data_key_hex': DATA_KEY.hex(),
            'wrapped_key_hex': WRAPPED_KEY.hex(),
            'cases': [case_vector(i, n, c, plaintext_of(p), s) for i, (n, c, p, s) in enumerate(CASES)],
            'refusals': refusals(),
        },
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
