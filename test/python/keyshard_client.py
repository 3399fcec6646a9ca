#!/usr/bin/python3
"""A minimal keyshard client in Python, used by test/python-client.test.ts to prove that a
non-TypeScript gRPC client interoperates with the coordinator over mutual TLS.

The keyshard.v1 stubs are never committed: they are generated at run time with

    protoc -I proto --python_out=OUT --grpc_python_out=OUT \
        --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin proto/keyshard/v1/*.proto

into --stubs-dir (when given, e.g. by the test, which generates them once) or into a private
temporary directory that is removed on exit. Needs the Debian packages python3-grpcio,
protobuf-compiler and protobuf-compiler-grpc; run it with /usr/bin/python3.

Modes (each prints one JSON object on stdout):
  roundtrip       Encrypt then Decrypt with the same context:
                  {"ciphertext_b64", "key_id", "key_version", "plaintext_b64", "matched"}
  decrypt         Decrypt a base64 ciphertext (e.g. made by the TS SDK):
                  {"plaintext_b64", "plaintext" (UTF-8, or null), "key_id", "key_version"}
  wrong-context   Decrypt with a context that is not the one the ciphertext was made with
                  (a given ciphertext, or one it encrypts first) and report the status:
                  {"code": "<gRPC status code name>", "details"}

Exit status: 0 on success; 1 on an unexpected gRPC error (JSON {"error", "code", "details"}
on stderr); 2 on bad usage or a missing dependency.
"""
import argparse
import base64
import glob
import json
import os
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
        return {'plaintext_b64': b64(dec.plaintext), 'plaintext': text, 'key_id': dec.key_id, 'key_version': dec.key_version}
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
    p.add_argument('mode', choices=['roundtrip', 'decrypt', 'wrong-context'])
    p.add_argument('--address', required=True, help='coordinator host:port')
    p.add_argument('--ca', required=True, help='cluster CA certificate (PEM)')
    p.add_argument('--cert', required=True, help='client certificate (PEM)')
    p.add_argument('--key', required=True, help='client private key (PEM)')
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
