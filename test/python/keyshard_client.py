#!/usr/bin/python3
"""A minimal keyshard client in Python, used by test/python-client.test.ts to prove that a
non-TypeScript gRPC client interoperates with the coordinator over mutual TLS, and that the
ciphertext format v1 (packages/crypto/VECTORS.md) can be parsed and opened from its
documentation alone: open-vectors opens the frozen vectors with this file's own implementation.

The keyshard.v1 stubs are never committed: they are generated at run time with

    protoc -I proto --python_out=OUT --grpc_python_out=OUT \
        --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin proto/keyshard/v1/*.proto

into --stubs-dir (when given, e.g. by the test, which generates them once) or into a private
temporary directory that is removed on exit. Needs the Debian packages python3-grpcio,
protobuf-compiler and protobuf-compiler-grpc (open-vectors: python3-cryptography instead);
run it with /usr/bin/python3.

Modes (each prints one JSON object on stdout):
  roundtrip       Encrypt then Decrypt with the same context:
                  {"ciphertext_b64", "key_id", "key_version", "plaintext_b64", "matched"}
  decrypt         Decrypt a base64 ciphertext (e.g. made by the TS SDK):
                  {"plaintext_b64", "plaintext" (UTF-8, or null), "key_id", "key_version"}
  wrong-context   Decrypt with a context that is not the one the ciphertext was made with
                  (a given ciphertext, or one it encrypts first) and report the status:
                  {"code": "<gRPC status code name>", "details"}
  open-vectors    No server: parse and open every ciphertext of a frozen vector file
                  (default packages/crypto/vectors/ciphertext-v1.json) with this file's own
                  ciphertext v1 implementation and the vector's TEST-ONLY key material:
                  {"opened": [{"name", "key_id", "key_version", "plaintext_b64"}],
                   "refused": [{"name", "error"}]}  (every invalid or unauthentic vector)
                  Needs pyca/cryptography (Debian package python3-cryptography).

roundtrip and decrypt also report "header": the key id and version this file parses from the
ciphertext itself (parse_ciphertext_v1), to compare with what the server says.

Exit status: 0 on success; 1 on an unexpected gRPC error (JSON {"error", "code", "details"}
on stderr); 2 on bad usage or a missing dependency.
"""
import argparse
import base64
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
GRPC_PLUGIN = '/usr/bin/grpc_python_plugin'
DEBIAN_PACKAGES = 'python3-grpcio, protobuf-compiler and protobuf-compiler-grpc'


def die(msg, status=2):
    print(json.dumps({'error': msg}), file=sys.stderr)
    sys.exit(status)


def generate_stubs(proto_dir, out_dir):
    """Runs protoc for keyshard/v1/*.proto into out_dir (no shell)."""
    protoc = shutil.which('protoc') or '/usr/bin/protoc'
    if not os.path.exists(protoc):
        die(f'protoc not found; install the Debian packages {DEBIAN_PACKAGES}')
    if not os.path.exists(GRPC_PLUGIN):
        die(f'{GRPC_PLUGIN} not found; install the Debian package protobuf-compiler-grpc')
    protos = sorted(glob.glob(os.path.join(proto_dir, 'keyshard', 'v1', '*.proto')))
    if not protos:
        die(f'no .proto files under {proto_dir}/keyshard/v1')
    cmd = [protoc, '-I', proto_dir, f'--python_out={out_dir}', f'--grpc_python_out={out_dir}',
           f'--plugin=protoc-gen-grpc_python={GRPC_PLUGIN}', *protos]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        die(f'protoc failed ({r.returncode}): {r.stderr.strip()}')


def load_stubs(stubs_dir):
    sys.path.insert(0, stubs_dir)
    try:
        import grpc  # noqa: F401  (checked here so the message names the package)
    except ImportError as e:
        die(f'cannot import grpc ({e}); install the Debian package python3-grpcio and run with /usr/bin/python3')
    from keyshard.v1 import keys_pb2, keys_pb2_grpc
    return keys_pb2, keys_pb2_grpc


# ---- ciphertext format v1 (packages/crypto/VECTORS.md, "Ciphertext v1"), written from the spec ----

CIPHERTEXT_MAGIC = b'ks'
CIPHERTEXT_FORMAT_V1 = 1
KEY_ID_RE = re.compile(rb'[A-Za-z0-9_-]{1,64}')
NONCE_BYTES = 12
TAG_BYTES = 16


class CiphertextError(ValueError):
    """A blob that is not a well-formed ciphertext v1, or one that does not authenticate."""


def parse_ciphertext_v1(blob):
    """'ks' | 0x01 | u8 L | key id (L ASCII bytes) | u32 BE version | nonce (12) | ct | tag (16).
    Returns (key_id, key_version, header, sealed = nonce || ct || tag)."""
    if len(blob) < 4:
        raise CiphertextError('ciphertext is truncated')
    if blob[:2] != CIPHERTEXT_MAGIC:
        raise CiphertextError('not a keyshard ciphertext')
    if blob[2] != CIPHERTEXT_FORMAT_V1:
        raise CiphertextError(f'unsupported ciphertext format {blob[2]}')
    id_len = blob[3]
    header_len = 4 + id_len + 4
    if id_len == 0 or len(blob) < header_len + NONCE_BYTES + TAG_BYTES:
        raise CiphertextError('ciphertext is truncated')
    key_id = blob[4:4 + id_len]
    if not KEY_ID_RE.fullmatch(key_id):  # stricter than keyshard: a byte >= 0x80 is refused here
        raise CiphertextError('ciphertext names an invalid key id')
    version = int.from_bytes(blob[4 + id_len:header_len], 'big')
    if version == 0:
        raise CiphertextError('ciphertext names key version 0')
    return key_id.decode('ascii'), version, blob[:header_len], blob[header_len:]


def encode_context(context):
    """u32 BE count, then per entry (sorted by the key's UTF-8 bytes) u32 BE length + key, u32 BE length + value."""
    entries = sorted((k.encode('utf-8'), v.encode('utf-8')) for k, v in context.items())
    out = len(entries).to_bytes(4, 'big')
    for k, v in entries:
        out += len(k).to_bytes(4, 'big') + k + len(v).to_bytes(4, 'big') + v
    return out


def open_ciphertext_v1(material, blob, context, algorithm='aes-256-gcm'):
    """Opens a ciphertext v1 locally with the key version's material: AAD = header || context encoding."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    except ImportError as e:
        die(f'cannot import cryptography ({e}); install the Debian package python3-cryptography and run with /usr/bin/python3')
    ciphers = {'aes-256-gcm': AESGCM, 'chacha20-poly1305': ChaCha20Poly1305}
    if algorithm not in ciphers:
        raise CiphertextError(f'unknown algorithm {algorithm}')
    _, _, header, sealed = parse_ciphertext_v1(blob)
    try:
        return ciphers[algorithm](material).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], header + encode_context(context))
    except InvalidTag:
        raise CiphertextError('ciphertext could not be authenticated: wrong key, wrong encryption context, or modified data') from None


def header_of(blob):
    key_id, version, _, _ = parse_ciphertext_v1(blob)
    return {'key_id': key_id, 'key_version': version}


def open_vectors(path):
    """Opens every case of a frozen ciphertext-v1 vector file; reports each refusal of the bad ones."""
    with open(path, encoding='utf-8') as f:
        vectors = json.load(f)
    cases = {c['name']: c for c in vectors['cases']}
    opened, refused = [], []
    for c in vectors['cases']:
        blob = bytes.fromhex(c['ciphertext_hex'])
        key_id, version, _, _ = parse_ciphertext_v1(blob)
        pt = open_ciphertext_v1(bytes.fromhex(c['key_hex']), blob, c['context'], c['algorithm'])
        opened.append({'name': c['name'], 'key_id': key_id, 'key_version': version, 'plaintext_b64': b64(pt)})
    bad = [(v['name'], bytes.fromhex(v['ciphertext_hex']), None, {}) for v in vectors['invalid']]
    bad += [(v['name'], bytes.fromhex(v.get('ciphertext_hex') or cases[v['case']]['ciphertext_hex']), cases[v['case']], v['context'])
            for v in vectors['authentication_failures']]
    for name, blob, case, context in bad:
        try:
            if case is None:
                parse_ciphertext_v1(blob)
            else:
                open_ciphertext_v1(bytes.fromhex(case['key_hex']), blob, context, case['algorithm'])
            refused.append({'name': name, 'error': None})
        except CiphertextError as e:
            refused.append({'name': name, 'error': str(e)})
    return {'opened': opened, 'refused': refused}


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def channel(args):
    import grpc
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca), private_key=read(args.key), certificate_chain=read(args.cert))
    options = [('grpc.max_receive_message_length', 16 * 1024 * 1024)]
    # grpcio (1.51, Debian) verifies an IP target against the certificate's IP SAN, so the dev
    # certificates (IP:127.0.0.1, DNS:localhost) need no override; one can be given anyway.
    if args.target_name_override:
        options.append(('grpc.ssl_target_name_override', args.target_name_override))
    return grpc.secure_channel(args.address, creds, options=options)


def call(method, request, timeout):
    return method(request, timeout=timeout, metadata=[('x-request-id', f'py-{uuid.uuid4()}')])


def parse_context(text):
    try:
        ctx = json.loads(text)
    except json.JSONDecodeError as e:
        die(f'context is not JSON: {e}')
    if not isinstance(ctx, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ctx.items()):
        die('context must be a JSON object of strings')
    return ctx


def plaintext_of(args):
    if args.plaintext_b64 is not None:
        return base64.b64decode(args.plaintext_b64, validate=True)
    if args.plaintext is not None:
        return args.plaintext.encode('utf-8')
    die('give --plaintext or --plaintext-b64')


def b64(data):
    return base64.b64encode(data).decode('ascii')


def run(args, pb, stub):
    import grpc
    context = parse_context(args.context)
    t = args.timeout
    if args.mode == 'roundtrip':
        pt = plaintext_of(args)
        enc = call(stub.Encrypt, pb.EncryptRequest(key=args.key_name, plaintext=pt, context=context), t)
        dec = call(stub.Decrypt, pb.DecryptRequest(ciphertext=enc.ciphertext, context=context), t)
        return {
            'ciphertext_b64': b64(enc.ciphertext),
            'key_id': enc.key_id,
            'key_version': enc.key_version,
            'plaintext_b64': b64(dec.plaintext),
            'decrypt_key_id': dec.key_id,
            'decrypt_key_version': dec.key_version,
            'matched': dec.plaintext == pt and dec.key_id == enc.key_id and dec.key_version == enc.key_version,
            'header': header_of(enc.ciphertext),
        }
    if args.mode == 'decrypt':
        if not args.ciphertext_b64:
            die('decrypt needs --ciphertext-b64')
        ct = base64.b64decode(args.ciphertext_b64, validate=True)
        dec = call(stub.Decrypt, pb.DecryptRequest(ciphertext=ct, context=context, key=args.key_name or ''), t)
        try:
            text = dec.plaintext.decode('utf-8')
        except UnicodeDecodeError:
            text = None
        return {'plaintext_b64': b64(dec.plaintext), 'plaintext': text, 'key_id': dec.key_id, 'key_version': dec.key_version, 'header': header_of(ct)}
    if args.mode == 'wrong-context':
        wrong = parse_context(args.wrong_context)
        if wrong == context:
            die('--wrong-context must differ from --context')
        if args.ciphertext_b64:
            ct = base64.b64decode(args.ciphertext_b64, validate=True)
        else:
            if not args.key_name:
                die('wrong-context needs --ciphertext-b64 or --key-name')
            ct = call(stub.Encrypt, pb.EncryptRequest(key=args.key_name, plaintext=plaintext_of(args), context=context), t).ciphertext
        try:
            call(stub.Decrypt, pb.DecryptRequest(ciphertext=ct, context=wrong), t)
        except grpc.RpcError as e:
            return {'code': e.code().name, 'details': e.details()}
        return {'code': 'OK', 'details': 'decrypt with the wrong context succeeded'}
    die(f'unknown mode {args.mode}')


def main(argv=None):
    p = argparse.ArgumentParser(description='keyshard Python interop client')
    p.add_argument('mode', choices=['roundtrip', 'decrypt', 'wrong-context', 'open-vectors'])
    p.add_argument('--address', help='coordinator host:port (every mode but open-vectors)')
    p.add_argument('--ca', help='cluster CA certificate (PEM)')
    p.add_argument('--cert', help='client certificate (PEM)')
    p.add_argument('--key', help='client private key (PEM)')
    p.add_argument('--vectors', default=os.path.join(REPO_ROOT, 'packages', 'crypto', 'vectors', 'ciphertext-v1.json'),
                   help='open-vectors: the frozen ciphertext vector file')
    p.add_argument('--target-name-override', default=None,
                   help='TLS name to verify instead of the target host (e.g. localhost)')
    p.add_argument('--stubs-dir', default=None, help='directory to generate the stubs into (default: a temp dir)')
    p.add_argument('--proto-dir', default=os.path.join(REPO_ROOT, 'proto'))
    p.add_argument('--key-name', default=None, help='key id, name or alias/<name>')
    p.add_argument('--plaintext', default=None, help='UTF-8 plaintext')
    p.add_argument('--plaintext-b64', default=None, help='plaintext as base64 (binary-safe)')
    p.add_argument('--ciphertext-b64', default=None)
    p.add_argument('--context', default='{"tenant": "py"}', help='encryption context as a JSON object')
    p.add_argument('--wrong-context', default='{"tenant": "not-py"}')
    p.add_argument('--timeout', type=float, default=10.0, help='per-call deadline in seconds')
    args = p.parse_args(argv)
    if args.mode == 'open-vectors':
        print(json.dumps(open_vectors(args.vectors)))
        return 0
    missing = [f'--{n}' for n in ('address', 'ca', 'cert', 'key') if not getattr(args, n)]
    if missing:
        die(f'{args.mode} needs {", ".join(missing)}')
    if args.mode == 'roundtrip' and not args.key_name:
        die('roundtrip needs --key-name')

    tmp = None
    stubs_dir = args.stubs_dir
    if stubs_dir is None:
        tmp = tempfile.mkdtemp(prefix='keyshard-pystubs-')
        stubs_dir = tmp
    try:
        if not os.path.exists(os.path.join(stubs_dir, 'keyshard', 'v1', 'keys_pb2_grpc.py')):
            os.makedirs(stubs_dir, exist_ok=True)
            generate_stubs(args.proto_dir, stubs_dir)
        pb, pb_grpc = load_stubs(stubs_dir)
        import grpc
        with channel(args) as ch:
            stub = pb_grpc.KeyServiceStub(ch)
            try:
                out = run(args, pb, stub)
            except grpc.RpcError as e:
                print(json.dumps({'error': 'rpc failed', 'code': e.code().name, 'details': e.details()}), file=sys.stderr)
                return 1
        print(json.dumps(out))
        return 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
