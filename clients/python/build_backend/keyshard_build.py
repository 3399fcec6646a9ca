"""keyshard's PEP 517 build backend: setuptools' own (setuptools.build_meta), from the
interpreter that runs the build, declared with `requires = []`.

Why: pip builds a project in an isolated environment into which it downloads the build
requirements. keyshard's build needs only setuptools and wheel, which Debian ships
(python3-setuptools, python3-wheel), and the machines it is built on may have no package
index at all. With `requires = []` pip downloads nothing; this module then makes the
interpreter's own site-packages visible again (pip's isolation hides them) and hands every
hook to setuptools.build_meta, so `pip install ./clients/python` works offline with or without
`--no-build-isolation`.

The wrapper changes nothing else: the hooks are setuptools', except that the
get_requires_for_build_* hooks ask for nothing (setuptools 66 would ask for `wheel`, which pip
would try to download; it is imported from the interpreter's site-packages instead).
See https://setuptools.pypa.io/en/latest/build_meta.html ("In-tree build backends").
"""
import os
import site
import sys

_HINT = (
    'keyshard builds with the setuptools and wheel of the Python that runs pip; on Debian: '
    'apt-get install python3-setuptools python3-wheel, then build with /usr/bin/python3 '
    '(in a venv made with --system-site-packages)'
)


def _use_interpreter_site_packages():
    """Appends the interpreter's site-packages (after the isolated environment's own paths)."""
    try:
        import setuptools  # noqa: F401
        import wheel  # noqa: F401
        return
    except ImportError:
        pass
    for d in site.getsitepackages():
        if os.path.isdir(d) and d not in sys.path:
            site.addsitedir(d)  # appends d and processes its .pth files
    try:
        import setuptools  # noqa: F401,F811
        import wheel  # noqa: F401,F811
    except ImportError as e:
        raise RuntimeError(f'{e}: {_HINT}') from e


_use_interpreter_site_packages()

from setuptools import build_meta as _setuptools  # noqa: E402

build_wheel = _setuptools.build_wheel
build_sdist = _setuptools.build_sdist
prepare_metadata_for_build_wheel = _setuptools.prepare_metadata_for_build_wheel
build_editable = getattr(_setuptools, 'build_editable', None)
prepare_metadata_for_build_editable = getattr(_setuptools, 'prepare_metadata_for_build_editable', None)
if build_editable is None:
    del build_editable
if prepare_metadata_for_build_editable is None:
    del prepare_metadata_for_build_editable


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []
