"""Scenarios of the keyshard Python SDK (clients/python) against a running cluster, for
test/python-sdk.test.ts. Run with the Python of a venv the SDK is installed in:

    .venv/bin/python test/python/sdk_scenarios.py <scenario> '<JSON arguments>'

The connection comes from the environment, as for the CLI: KEYSHARD_ADDR (comma-separated),
KEYSHARD_CA, KEYSHARD_CERT, KEYSHARD_KEY (and KEYSHARD_COORDINATOR_IDS if set). Each scenario
prints one JSON object on stdout; a keyshard error the scenario does not expect is printed as
{"error": {...}} with exit status 1.
"""
import base64
import json
import sys
import time
import uuid

import keyshard
from keyshard import ciphertext


def b64(data):
    return base64.b64encode(data).decode('ascii')


def unb64(text):
    return base64.b64decode(text, validate=True)


def describe(e):
    """A KeyshardError as JSON: its class (by reason, or code), code, reason, metadata."""
    return {'class': type(e).__name__, 'code': e.code_name, 'reason': e.reason, 'metadata': e.metadata, 'details': e.details,
            'request_id': e.request_id}


def expect_error(fn):
    try:
        fn()
    except keyshard.KeyshardError as e:
        return describe(e)
    return {'class': None, 'code': 'OK'}


def header(blob):
    p = ciphertext.parse(blob)
    return {'key_id': p.key_id, 'key_version': p.key_version}


def roundtrip(ks, a):
    pt = unb64(a['plaintext_b64'])
    enc = ks.encrypt(a['key'], pt, context=a['context'])
    dec = ks.decrypt(enc.ciphertext, context=a['context'])
    return {
        'ciphertext_b64': b64(enc.ciphertext), 'key_id': enc.key_id, 'key_version': enc.key_version,
        'plaintext_b64': b64(dec.plaintext), 'matched': dec.plaintext == pt and dec.key_id == enc.key_id,
        'header': header(enc.ciphertext), 'servers': ks.server_identities(),
    }


def decrypt(ks, a):
    ct = unb64(a['ciphertext_b64'])
    dec = ks.decrypt(ct, context=a['context'])
    return {'plaintext_b64': b64(dec.plaintext), 'key_id': dec.key_id, 'key_version': dec.key_version, 'header': header(ct)}


def wrong_context(ks, a):
    ct = unb64(a['ciphertext_b64'])
    return expect_error(lambda: ks.decrypt(ct, context=a['context']))


def lifecycle(ks, a):
    """The common KeyService calls on fresh keys, and the typed errors of the common refusals."""
    p = a['prefix']
    out = {}
    key = ks.create_key(f'{p}-aes', description='from python', labels={'team': 'py'}, rotation_period=86400)
    out['created'] = {'name': key.name, 'type': key.type, 'state': keyshard.keys_pb2.KeyState.Name(key.state),
                      'primary_version': key.primary_version, 'labels': dict(key.labels),
                      'rotation_period': key.rotation.period_seconds}
    out['get_by_name_is_same_id'] = ks.get_key(f'{p}-aes').id == key.id
    out['listed'] = any(k.id == key.id for k in ks.list_keys(page_size=1))
    dk = ks.generate_data_key(key.id, 32, context={'f': 'x'})
    out['data_key'] = {'length': len(dk.plaintext), 'opens': ks.decrypt(dk.ciphertext, context={'f': 'x'}).plaintext == dk.plaintext}
    out['data_key_without_plaintext'] = len(ks.generate_data_key(key.id, with_plaintext=False).plaintext)
    rotated = ks.rotate_key(key.id)
    out['rotated_primary_version'] = rotated.primary_version
    out['encrypts_with_version'] = ks.encrypt(key.id, b'x').key_version
    ks.disable_key(key.id)
    out['disabled_encrypt'] = expect_error(lambda: ks.encrypt(key.id, b'x'))
    out['enabled_state'] = keyshard.keys_pb2.KeyState.Name(ks.enable_key(key.id).state)
    out['encrypt_after_enable'] = ks.encrypt(key.id, b'x').key_id == key.id
    out['missing_key'] = expect_error(lambda: ks.get_key(f'{p}-missing-{uuid.uuid4().hex[:6]}'))
    out['duplicate_create'] = expect_error(lambda: ks.create_key(f'{p}-aes'))
    signer = ks.create_key(f'{p}-ed', type='ed25519')
    sig = ks.sign(signer.id, b'message').signature
    out['verify'] = [ks.verify(signer.id, sig, b'message'), ks.verify(signer.id, sig, b'other')]
    out['public_key_pem'] = ks.get_public_key(signer.id).pem.startswith('-----BEGIN PUBLIC KEY-----')
    mac_key = ks.create_key(f'{p}-mac', type='hmac-sha256')
    tag = ks.mac(mac_key.id, b'message').mac
    out['verify_mac'] = [ks.verify_mac(mac_key.id, b'message', tag), ks.verify_mac(mac_key.id, b'other', tag)]
    st = ks.status()
    out['status'] = {'initialized': st.initialized, 'sealed': st.sealed, 'coordinator_id': st.coordinator_id}
    return out


def identity(ks, a):
    """The client is expected to be pointed at a server that is not an expected coordinator."""
    t0 = time.monotonic()
    err = expect_error(lambda: ks.get_key('anything', timeout=a.get('timeout', 5)))
    err['seconds'] = round(time.monotonic() - t0, 2)
    return err


def sealed(ks, a):
    return {'encrypt': expect_error(lambda: ks.encrypt(a['key'], b'x', timeout=a.get('timeout', 5))),
            'status_sealed': ks.status().sealed}


def failover(ks, a):
    """Calls through a replica list whose first replica is stopped (or sealed)."""
    out = {}
    t0 = time.monotonic()
    timeout = a.get('timeout', 8)
    enc = ks.encrypt(a['key'], b'failover', context={'f': 'o'}, timeout=timeout)
    out['encrypt'] = enc.key_id
    out['decrypt'] = ks.decrypt(enc.ciphertext, context={'f': 'o'}, timeout=timeout).plaintext == b'failover'
    out['get_key'] = ks.get_key(a['key'], timeout=timeout).id
    if a.get('status', True):
        out['status_coordinator'] = ks.status(timeout=timeout).coordinator_id
    if a.get('create'):
        out['create_key'] = ks.create_key(a['create'], timeout=timeout).name
    out['seconds'] = round(time.monotonic() - t0, 2)
    out['servers'] = ks.server_identities()
    return out


SCENARIOS = {'roundtrip': roundtrip, 'decrypt': decrypt, 'wrong-context': wrong_context, 'lifecycle': lifecycle,
             'identity': identity, 'sealed': sealed, 'failover': failover}


def main(argv):
    if len(argv) != 3 or argv[1] not in SCENARIOS:
        print(f'usage: {argv[0]} {{{",".join(SCENARIOS)}}} JSON', file=sys.stderr)
        return 2
    a = json.loads(argv[2])
    client_args = a.pop('client', {})
    try:
        with keyshard.Client(**client_args) as ks:
            out = SCENARIOS[argv[1]](ks, a)
    except keyshard.KeyshardError as e:
        print(json.dumps({'error': describe(e)}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
