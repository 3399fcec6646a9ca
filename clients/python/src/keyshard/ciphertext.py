"""keyshard's ciphertext format v1, implemented from its specification
(packages/crypto/VECTORS.md, "Ciphertext v1" and "Encryption context"), with no keyshard code.

What Encrypt returns and Decrypt takes is self-describing:

    'ks' | 0x01 | u8 L | key id (L ASCII bytes, [A-Za-z0-9_-]{1,64}) | u32 BE key version (>= 1)
         | nonce (12) | ciphertext | tag (16)

header = magic .. key version; AAD = header || encode_context(context).

`parse` needs nothing beyond the standard library: use it to see which key and version a
ciphertext needs without asking the server. `open_ciphertext` decrypts locally with a key
version's raw material; keyshard never hands that out, so it exists for format checks against
the published TEST-ONLY vectors (packages/crypto/vectors/ciphertext-v1.json). It needs
pyca/cryptography (Debian: python3-cryptography).
"""
import re
from typing import Mapping, NamedTuple

MAGIC = b'ks'
FORMAT_V1 = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID = re.compile(rb'[A-Za-z0-9_-]{1,64}')


class CiphertextError(ValueError):
    """A blob that is not a well-formed ciphertext v1, or one that does not authenticate."""


class Parsed(NamedTuple):
    key_id: str
    key_version: int
    header: bytes
    sealed: bytes  # nonce || ciphertext || tag


def parse(blob: bytes) -> Parsed:
    """The key id and version a ciphertext v1 names. Refuses, in the specification's order and
    with keyshard's messages: truncated, not 'ks', another format, truncated (L = 0 or too short
    for header + nonce + tag), an invalid key id (stricter than keyshard: a byte >= 0x80 is
    refused here, see VECTORS.md "Ambiguities"), version 0."""
    blob = bytes(blob)
    if len(blob) < 4:
        raise CiphertextError('ciphertext is truncated')
    if blob[:2] != MAGIC:
        raise CiphertextError('not a keyshard ciphertext')
    if blob[2] != FORMAT_V1:
        raise CiphertextError(f'unsupported ciphertext format {blob[2]}')
    id_len = blob[3]
    header_len = 4 + id_len + 4
    if id_len == 0 or len(blob) < header_len + NONCE_BYTES + TAG_BYTES:
        raise CiphertextError('ciphertext is truncated')
    key_id = blob[4:4 + id_len]
    if not _KEY_ID.fullmatch(key_id):
        raise CiphertextError('ciphertext names an invalid key id')
    version = int.from_bytes(blob[4 + id_len:header_len], 'big')
    if version == 0:
        raise CiphertextError('ciphertext names key version 0')
    return Parsed(key_id.decode('ascii'), version, blob[:header_len], blob[header_len:])


def encode_context(context: Mapping[str, str]) -> bytes:
    """u32 BE count, then per entry (sorted by the key's UTF-8 bytes) u32 BE length + key, u32 BE
    length + value."""
    entries = sorted((k.encode('utf-8'), v.encode('utf-8')) for k, v in context.items())
    out = bytearray(len(entries).to_bytes(4, 'big'))
    for k, v in entries:
        out += len(k).to_bytes(4, 'big') + k + len(v).to_bytes(4, 'big') + v
    return bytes(out)


def open_ciphertext(material: bytes, blob: bytes, context: Mapping[str, str], algorithm: str = 'aes-256-gcm') -> bytes:
    """Decrypts a ciphertext v1 locally with a key version's 32-byte material.
    algorithm: 'aes-256-gcm' (key type aes256-gcm) or 'chacha20-poly1305'."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError(f'{e}: keyshard.ciphertext.open_ciphertext needs pyca/cryptography (Debian: python3-cryptography)') from e
    ciphers = {'aes-256-gcm': AESGCM, 'chacha20-poly1305': ChaCha20Poly1305}
    if algorithm not in ciphers:
        raise CiphertextError(f'unknown algorithm {algorithm}')
    p = parse(blob)
    try:
        return ciphers[algorithm](bytes(material)).decrypt(p.sealed[:NONCE_BYTES], p.sealed[NONCE_BYTES:], p.header + encode_context(context))
    except InvalidTag:
        raise CiphertextError('ciphertext could not be authenticated: wrong key, wrong encryption context, or modified data') from None
