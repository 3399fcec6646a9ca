"""Build steps of the keyshard Python SDK that pyproject.toml cannot declare: the gRPC stubs are
generated from the repository's .proto files when the package is built, never committed.

- build_py runs protoc (Debian: protobuf-compiler) with the gRPC Python plugin (Debian:
  protobuf-compiler-grpc) over keyshard/v1/*.proto and google/rpc/*.proto and writes:
    keyshard/v1/<name>_pb2.py, <name>_pb2_grpc.py  (import path = proto package: keyshard.v1)
    keyshard/_rpc/status_pb2.py, error_details_pb2.py  (google.rpc.Status / ErrorInfo, moved
        under keyshard so they never clash on disk with googleapis-common-protos' google/rpc)
  straight into the build directory: the source tree stays free of generated files.
- sdist copies the protos into the sdist (proto/), so an sdist builds on its own.

Where the protos are: $KEYSHARD_PROTO_DIR, else ./proto (an sdist), else ../../proto (this
directory inside a keyshard clone). protoc: $PROTOC, else /usr/bin/protoc, else protoc on PATH;
the plugin: $GRPC_PYTHON_PLUGIN, else /usr/bin/grpc_python_plugin, else grpc_python_plugin on
PATH.
"""
import glob
import os
import shutil
import subprocess
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
DEBIAN_PACKAGES = 'protobuf-compiler protobuf-compiler-grpc'


def proto_dir():
    candidates = [os.environ.get('KEYSHARD_PROTO_DIR'), os.path.join(HERE, 'proto'), os.path.join(HERE, '..', '..', 'proto')]
    for d in candidates:
        if d and os.path.isfile(os.path.join(d, 'keyshard', 'v1', 'keys.proto')):
            return os.path.abspath(d)
    raise SystemExit(
        'keyshard: cannot find the .proto files (keyshard/v1/keys.proto) in '
        + ', '.join(os.path.abspath(d) for d in candidates if d)
        + ': build from a keyshard clone (clients/python) or from an sdist, or set KEYSHARD_PROTO_DIR'
    )


def tool(env, default, name):
    path = os.environ.get(env) or (default if os.path.exists(default) else shutil.which(name))
    if not path or not os.path.exists(path):
        raise SystemExit(f'keyshard: {name} not found (set {env}, or install the Debian packages {DEBIAN_PACKAGES})')
    return path


def protoc(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f'keyshard: protoc failed ({r.returncode}): {r.stderr.strip()}\n  command: {" ".join(args)}')


def generate_stubs(out_dir):
    """Writes the generated modules under out_dir/keyshard (a build_lib); returns their paths."""
    protos = proto_dir()
    protoc_bin = tool('PROTOC', '/usr/bin/protoc', 'protoc')
    plugin = tool('GRPC_PYTHON_PLUGIN', '/usr/bin/grpc_python_plugin', 'grpc_python_plugin')
    keyshard = sorted(os.path.relpath(p, protos) for p in glob.glob(os.path.join(protos, 'keyshard', 'v1', '*.proto')))
    rpc = sorted(os.path.relpath(p, protos) for p in glob.glob(os.path.join(protos, 'google', 'rpc', '*.proto')))
    if not rpc:
        raise SystemExit(f'keyshard: no google/rpc/*.proto under {protos}')
    outputs = []
    with tempfile.TemporaryDirectory(prefix='keyshard-stubs-') as tmp:
        protoc([protoc_bin, '-I', protos, f'--python_out={tmp}', f'--grpc_python_out={tmp}',
                f'--plugin=protoc-gen-grpc_python={plugin}', *keyshard])
        protoc([protoc_bin, '-I', protos, f'--python_out={tmp}', *rpc])
        moves = [(os.path.join(tmp, 'keyshard', 'v1'), os.path.join(out_dir, 'keyshard', 'v1')),
                 (os.path.join(tmp, 'google', 'rpc'), os.path.join(out_dir, 'keyshard', '_rpc'))]
        for src, dst in moves:
            os.makedirs(dst, exist_ok=True)
            for f in os.listdir(dst):  # stubs of a previous build into the same build_lib
                if f.endswith(('_pb2.py', '_pb2_grpc.py')):
                    os.remove(os.path.join(dst, f))
            for f in sorted(os.listdir(src)):
                if f.endswith('.py'):
                    shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))
                    outputs.append(os.path.join(dst, f))
    return outputs


class BuildPyWithStubs(build_py):
    """build_py, then the stubs into the same build directory."""

    def run(self):
        super().run()
        self._stubs = generate_stubs(self.build_lib)
        self.announce(f'keyshard: generated {len(self._stubs)} stub modules from {proto_dir()}', 2)
        if not self.dry_run:
            self.byte_compile(self._stubs)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + list(getattr(self, '_stubs', []))


class SdistWithProtos(sdist):
    """An sdist that carries the .proto files it is built from (proto/)."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        src = proto_dir()
        dst = os.path.join(base_dir, 'proto')
        if os.path.abspath(src) != os.path.abspath(dst):
            shutil.rmtree(dst, ignore_errors=True)
            for sub in ('keyshard/v1', 'google/rpc'):
                shutil.copytree(os.path.join(src, sub), os.path.join(dst, sub), ignore=shutil.ignore_patterns('*.py'))


setup(cmdclass={'build_py': BuildPyWithStubs, 'sdist': SdistWithProtos})
