"""Build the self-contained ``aws-cni`` for ``/opt/cni/bin``: ``python -m vpccni.cniplugin.bundle OUT``.

The output is one Python script for the host's system interpreter (``#!/usr/bin/python3 -IS``: isolated,
no site, so nothing installed on the host can interfere). A few lines of its own (``STUB``), then data:
the shim's modules and ``launcher`` as code objects compiled by the building interpreter, and their sources
for any other interpreter (zlib). When the interpreter's bytecode magic is the builder's, the stub executes
the launcher's code and hands it the compiled modules; otherwise it compiles the launcher and the modules
from the sources (slower, same behaviour). Build with the Python minor version the hosts run.

Why a script and not a zipapp: the interpreter runs a zip archive through ``runpy``, which imports
``importlib.util``, ``contextlib``, ``collections`` and more (~4 ms) before the shim's first line. And why
so little source: a script is compiled on every run and compiling is what costs in a fresh process, so
the file holds code to unmarshal, not source to compile. Modules are unmarshalled only when imported.

Minimum host interpreter: Python 3.7 (Amazon Linux 2's python3); an older one gets a CNI error saying so.

``entry_pyc`` puts the same payload in a compiled module instead, for an interpreter known to be the
builder's (the standalone ``aws-cni``, see ``standalone``): run as ``python3 -I -S aws-cni.pyc`` it has
nothing to compile or decode before the shim runs, which saves ~1 ms per call over the script.
"""

from __future__ import annotations
import __future__

import ast
import binascii
import importlib.util
import marshal
import os
import pathlib
import sys
import types
import zlib

from vpccni.cniplugin import launcher
from vpccni.cniplugin.version import VERSION

SHEBANG = b"#!/usr/bin/python3 -IS\n"
MIN_PYTHON = launcher.MIN_PYTHON
PACKAGE = "vpccni.cniplugin"
LAUNCHER = f"{PACKAGE}.launcher"
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
# Only what the executable needs: the builder, the test doubles and ipamd's result conversion stay out.
EXCLUDED = {"bundle.py", "install.py", "results.py", "standalone.py", "testing.py"}
# The executable's entry module: ``main(skip_teardown=True)`` runs one call and ends the process.
MAIN = f"{PACKAGE}.main"
# Modules only slow paths import (ipamd unreachable): compiled from their source when imported, which
# keeps the code every call reads small.
SOURCE_ONLY = {f"{PACKAGE}.delqueue"}
# The executable's own lines; everything else in the file is data. Plain enough for any python3 to parse.
STUB = """\
import sys
SOURCES = {sources!r}
if getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", None) == {magic!r}:
    import binascii, marshal
    MODULES = marshal.loads(binascii.a2b_base64({code!r}))
    exec(marshal.loads(MODULES.pop({launcher!r})[1]))
    start(MODULES, SOURCES)
else:
    import binascii, marshal, zlib
    LAUNCHER = marshal.loads(zlib.decompress(binascii.a2b_base64(SOURCES)))[{launcher!r}][1]
    exec(compile(LAUNCHER, {launcher_file!r}, "exec"))
    start(None, SOURCES)
"""
# The compiled entry's source: the modules are a bytes constant of the code object itself.
ENTRY = """\
import marshal
MODULES = marshal.loads({code!r})
exec(marshal.loads(MODULES.pop({launcher!r})[1]))
start(MODULES, {sources!r}, {main!r})
"""


def sources() -> dict[str, tuple[bool, str]]:
    """Every bundled module: ``{name: (is package, source)}``. ``vpccni`` is an empty package, standing
    in for the namespace package it is in a development install."""
    out = {"vpccni": (True, "")}
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        if path.name not in EXCLUDED:
            is_package = path.stem == "__init__"
            out[PACKAGE if is_package else f"{PACKAGE}.{path.stem}"] = (is_package, path.read_text("utf-8"))
    return out


def compile_module(name: str, is_package: bool, source: str) -> types.CodeType:
    """The module's code as the interpreter compiles it, except that ``from __future__ import ...`` becomes
    a compiler flag: the statement would also import the ``__future__`` module (a stdlib file lookup) on
    every call."""
    filename = launcher.filename(name, is_package)
    tree = ast.parse(source, filename)
    flags = 0
    body: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                flags |= getattr(__future__, alias.name).compiler_flag
        else:
            body.append(node)
    tree.body = body
    return compile(tree, filename, "exec", flags=flags, dont_inherit=True)


def _base64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def pack_sources(modules: dict[str, tuple[bool, str]]) -> str:
    """``{name: (is package, source)}`` as the executable embeds it (``launcher.unpack_sources`` reads it)."""
    text = {name: (pkg, src.encode("utf-8")) for name, (pkg, src) in modules.items()}
    return _base64(zlib.compress(marshal.dumps(text), 9))


def compiled(modules: dict[str, tuple[bool, str]]) -> bytes:
    """``{name: (is package, marshalled code or None for a source-only module)}``, marshalled: what the
    launcher's finder loads from. Uncompressed: decompressing costs more than reading the larger file does."""
    code = {
        name: (pkg, None if name in SOURCE_ONLY else marshal.dumps(compile_module(name, pkg, src)))
        for name, (pkg, src) in modules.items()
    }
    return marshal.dumps(code)


def entry_pyc(main: str = MAIN) -> bytes:
    """A compiled module (``.pyc``, this interpreter's bytecode) that runs ``main``'s executable with the
    bundled modules. Only an interpreter with this bytecode magic can run it."""
    modules = sources()
    source = ENTRY.format(code=compiled(modules), launcher=LAUNCHER, sources=pack_sources(modules), main=main)
    code = compile(source, main.rpartition(".")[2] + ".pyc", "exec", dont_inherit=True)
    # The header of an unchecked pyc: magic, flags (0), then 8 bytes no one reads for a script.
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)


def script() -> bytes:
    """The whole executable: shebang, a generated-file note, the stub with its data."""
    modules = sources()
    head = (
        f"# aws-cni {VERSION} (vpccni), built by `python -m vpccni.cniplugin.bundle` with Python "
        f"{sys.version_info[0]}.{sys.version_info[1]}: generated, do not edit.\n"
    )
    body = STUB.format(
        sources=pack_sources(modules),
        magic=importlib.util.MAGIC_NUMBER,
        code=_base64(compiled(modules)),
        launcher=LAUNCHER,
        launcher_file=launcher.filename(LAUNCHER, False),
    )
    return SHEBANG + (head + body).encode("utf-8")


def build(out: str | os.PathLike[str]) -> pathlib.Path:
    """Write the executable to ``out`` (mode 0755, replaced atomically) and return its path."""
    target = pathlib.Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(script())
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vpccni.cniplugin.bundle OUT   (e.g. /opt/cni/bin/aws-cni)", file=sys.stderr)
        return 2
    path = build(args[0])
    print(
        f"wrote {path} (runs with {SHEBANG[2:].decode().strip()}, Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
