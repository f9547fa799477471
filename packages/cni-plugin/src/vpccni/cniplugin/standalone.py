"""The standalone ``aws-cni``, with its own interpreter: ``python -m vpccni.cniplugin.standalone OUT``.

A host needs nothing for it but the kernel: no Python (Bottlerocket has none) and not even a C library
(the loader and libraries come along). OUT gets the layout the init container copies into ``/opt/cni/bin``
(``install``)::

    OUT/aws-cni -> .vpccni/<version>-<digest>/aws-cni     a relative symlink per executable
    OUT/.vpccni/<version>-<digest>/
        aws-cni            the trampoline (trampoline.c, static): execs the interpreter below (as
                           egress-cni it answers the common ADD itself: egressfast.c)
        aws-cni.pyc        the shim, precompiled by that interpreter (``bundle.entry_pyc``)
        bin/python3        the interpreter (run from the image build: the image's own CPython)
        bin/python3._pth   its whole ``sys.path``: nothing is looked up outside the directory
        lib/ld.so, lib/libc.so.6, ...    its dynamic loader and the libraries it links
        lib/python3.11/    the standard-library modules the shim can import, as sourceless ``.pyc``

The directory is named after a digest of its contents, so one build is one name on every node and an
upgrade is a new directory plus a symlink swap (``install``). Every file is taken from the interpreter
this runs on (or ``--python``); ``ldd`` names the libraries. Build inside the image (the Containerfile
does) so that the files match the image's architecture and C library.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vpccni.cniplugin import bundle, install
from vpccni.cniplugin.version import VERSION

# Every standalone CNI executable and the module whose ``main(skip_teardown=True)`` it runs. They share one
# directory: one interpreter for all. egress-cni is the same shim: ipamd serves its conflist entry by `type`.
EXECUTABLES: Mapping[str, str] = {"aws-cni": bundle.MAIN, "egress-cni": bundle.MAIN}
# The trampoline's C sources (compiled together) and the headers they include, all beside this module.
TRAMPOLINE_SOURCES = tuple(
    Path(__file__).with_name(n) for n in ("trampoline.c", "jsonscan.c", "egressfast.c")
)
TRAMPOLINE_FILES = (
    *TRAMPOLINE_SOURCES,
    *(Path(__file__).with_name(n) for n in ("jsonscan.h", "egressfast.h")),
)
CC = "musl-gcc"
CC_FLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")
# Imported at start-up (the codec registry) or by name at run time: the whole package goes in.
WHOLE_PACKAGES = ("encodings",)

# Run by the interpreter being packed (isolated, no site): the files of every module it has loaded after
# importing the given ones, plus what the build needs to know about it.
_PROBE = """\
import sys
for name in sys.argv[1:]:
    __import__(name)
files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
import importlib.util, json, os
print(json.dumps({
    "executable": os.path.realpath(sys.executable),
    "version": list(sys.version_info[:2]),
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "stdlib": os.path.dirname(os.__file__),
    "files": {n: f for n, f in files.items() if f},
}))
"""


class BuildError(RuntimeError):
    """The standalone executable cannot be built here; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True)
class Interpreter:
    executable: Path
    version: tuple[int, int]
    stdlib: Path
    modules: dict[str, Path]  # every module the shim can load (and start-up loads) -> its file

    @property
    def stdlib_subdir(self) -> str:
        return f"lib/python{self.version[0]}.{self.version[1]}"


def _skip_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def stdlib_imports(sources: Mapping[str, tuple[bool, str]]) -> set[str]:
    """Every module the bundled sources import at run time (any depth, function bodies included) that is
    not bundled itself; imports under ``if TYPE_CHECKING:`` never run and are left out. ``__future__``
    stays in: the modules compiled from their sources at run time (``bundle.SOURCE_ONLY``) import it."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _skip_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for _, source in sources.values():
        visit(ast.parse(source))
    return {name for name in found if name.partition(".")[0] != "vpccni"}


def probe(python: str, modules: Iterable[str]) -> Interpreter:
    """Ask ``python`` (the interpreter to pack) where it is and which files ``modules`` load."""
    wanted = sorted({*modules, *WHOLE_PACKAGES})
    proc = subprocess.run(
        [python, "-I", "-S", "-c", _PROBE, *wanted], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BuildError(f"{python} cannot import what the shim needs: {proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    if bytes.fromhex(data["magic"]) != importlib.util.MAGIC_NUMBER:
        raise BuildError(
            f"{python} is Python {'.'.join(map(str, data['version']))}, this builder "
            f"{sys.version_info[0]}.{sys.version_info[1]}: the code is compiled here for that interpreter, "
            "so run the builder with the same Python version"
        )
    return Interpreter(
        executable=Path(data["executable"]),
        version=(data["version"][0], data["version"][1]),
        stdlib=Path(data["stdlib"]),
        modules={name: Path(path) for name, path in data["files"].items()},
    )


def shared_libraries(binaries: Iterable[Path]) -> tuple[Path, dict[str, Path]]:
    """(The dynamic loader, {soname: file}) of ``binaries``, as the loader resolves them (``ldd``)."""
    loader: Path | None = None
    libraries: dict[str, Path] = {}
    for binary in binaries:
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(f"ldd {binary} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        for line in proc.stdout.splitlines():
            fields = line.split()
            if "=>" in fields:
                name, target = fields[0], fields[fields.index("=>") + 1]
                if target == "not":
                    raise BuildError(f"{binary} needs {name}, which is not installed")
                libraries[name] = Path(target)
            elif fields and fields[0].startswith("/"):
                loader = Path(fields[0])
    if loader is None:
        raise BuildError(f"no dynamic loader named by ldd for {', '.join(map(str, binaries))}")
    return loader, libraries


def compile_trampoline(out: Path, cc: str = CC) -> Path:
    """The trampoline compiled static with ``cc`` (musl's wrapper by default: a static musl program starts
    in a fraction of a static glibc one's time, and this one runs on every CNI call)."""
    sources = [str(path) for path in TRAMPOLINE_SOURCES]
    proc = subprocess.run(
        [cc, *CC_FLAGS, "-o", str(out), *sources], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BuildError(
            f"{cc} could not build the trampoline ({', '.join(p.name for p in TRAMPOLINE_SOURCES)}; static, "
            f"with musl: apt-get install gcc musl-tools): {proc.stderr.strip()}"
        )
    return out


def _copy(src: Path, dst: Path, mode: int = 0o644) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chmod(dst, mode)


def _stdlib_files(interpreter: Interpreter) -> dict[Path, Path]:
    """{relative path under lib/pythonX.Y: source file} for the modules and the whole packages."""
    out: dict[Path, Path] = {}
    sources = [path for path in interpreter.modules.values() if path.is_relative_to(interpreter.stdlib)]
    for package in WHOLE_PACKAGES:
        sources += (interpreter.stdlib / package).glob("*.py")
    for path in sources:
        out[path.relative_to(interpreter.stdlib)] = path
    return out


# Every interpreter start looks up its UTF-8 codec through `encodings`, whose first line imports the table of
# ~330 codec aliases (~0.25 ms of every CNI call) that a UTF-8 look-up never reads ("utf_8" is no alias).
# The bundle's copy reads the table at its first other look-up instead: the same codecs for every name.
_ALIASES_IMPORT = "from . import aliases\n"
_ALIASES_BINDING = "_aliases = aliases.aliases\n"
_ALIASES_LOOKUP = """    aliased_encoding = _aliases.get(norm_encoding) or \\
                       _aliases.get(norm_encoding.replace('.', '_'))
"""
_LAZY_ALIASES_LOOKUP = """    global _aliases
    if _aliases is None and norm_encoding == 'utf_8':
        aliased_encoding = None  # no alias (the build checked): the table is not read for it
    else:
        if _aliases is None:
            from .aliases import aliases as _aliases
        aliased_encoding = _aliases.get(norm_encoding) or \\
                           _aliases.get(norm_encoding.replace('.', '_'))
"""


def lazy_aliases(init_source: str, aliases_source: str) -> str | None:
    """``encodings/__init__.py`` that reads its aliases table only for a name other than ``utf_8``; None
    when the source is not the one this was written for, or ``utf_8`` is an alias (then it is left as is)."""
    table = next(
        (node.value for node in ast.parse(aliases_source).body if isinstance(node, ast.Assign)
         and [getattr(t, "id", "") for t in node.targets] == ["aliases"]),
        None,
    )  # fmt: skip
    if not isinstance(table, ast.Dict) or "utf_8" in {getattr(k, "value", None) for k in table.keys}:
        return None
    if any(init_source.count(text) != 1 for text in (_ALIASES_IMPORT, _ALIASES_BINDING, _ALIASES_LOOKUP)):
        return None
    return (
        init_source.replace(_ALIASES_IMPORT, "")
        .replace(_ALIASES_BINDING, "_aliases = None\n")
        .replace(_ALIASES_LOOKUP, _LAZY_ALIASES_LOOKUP)
    )


def _compile_stdlib(source: Path, relative: Path, out: Path) -> None:
    """Sourceless ``.pyc``: nothing to compare with a source file, nothing to write back to the directory."""
    compiled = out / relative.with_suffix(".pyc")
    text = None
    if relative == Path("encodings", "__init__.py"):
        text = lazy_aliases(source.read_text(), source.with_name("aliases.py").read_text())
    if text is not None:
        source = compiled.with_suffix(".py")
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(text)
    try:
        py_compile.compile(
            str(source), cfile=str(compiled), dfile=str(relative), doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )  # fmt: skip
    finally:
        if text is not None:
            source.unlink()


def populate(root: Path, interpreter: Interpreter, trampoline: Path, executables: Mapping[str, str]) -> None:
    """Fill the empty directory ``root`` with one standalone build."""
    stdlib = root / interpreter.stdlib_subdir
    extensions: list[Path] = []
    for relative, source in _stdlib_files(interpreter).items():
        if source.suffix == ".py":
            _compile_stdlib(source, relative, stdlib)
        else:
            _copy(source, stdlib / relative, 0o755)
            extensions.append(source)
    (stdlib / "lib-dynload").mkdir(parents=True, exist_ok=True)  # on sys.path (the ._pth) in any case
    loader, libraries = shared_libraries([interpreter.executable, *extensions])
    _copy(loader, root / "lib" / "ld.so", 0o755)
    for name, path in libraries.items():
        _copy(path, root / "lib" / name, 0o755)
    _copy(interpreter.executable, root / "bin" / "python3", 0o755)
    (root / "bin" / "python3._pth").write_text(
        f"../{interpreter.stdlib_subdir}\n../{interpreter.stdlib_subdir}/lib-dynload\n"
    )
    for name, main in executables.items():
        _copy(trampoline, root / name, 0o755)
        (root / f"{name}.pyc").write_bytes(bundle.entry_pyc(main))


def digest(root: Path) -> str:
    """A digest of every file's relative path, executable bit and contents."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root)}\0{os.access(path, os.X_OK):d}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class Build:
    out: Path
    runtime: str  # the directory's name under .vpccni
    executables: tuple[Path, ...]


def build(
    out: Path,
    *,
    python: str | None = None,
    trampoline: Path | None = None,
    cc: str = CC,
    executables: Mapping[str, str] = EXECUTABLES,
) -> Build:
    """Build into ``out`` (a CNI bin dir or the image's /app): a new ``.vpccni/<version>-<digest>`` unless
    the same build is already there, and a symlink per executable, each replaced atomically."""
    interpreter = probe(python or sys.executable, stdlib_imports(bundle.sources()))
    runtimes = out / install.RUNTIME_DIR
    runtimes.mkdir(parents=True, exist_ok=True)
    # Staged beside the builds: moving it into place is a rename.
    with tempfile.TemporaryDirectory(prefix=".tmp-build-", dir=runtimes) as tmp:
        staged = Path(tmp) / "root"
        staged.mkdir()
        if trampoline is None:
            trampoline = compile_trampoline(Path(tmp) / "trampoline", cc)
        populate(staged, interpreter, trampoline, executables)
        name = f"{VERSION}-{digest(staged)[:12]}"
        install.commit_runtime(staged, out, name)
    links = install.activate(out, dict.fromkeys(executables, name))
    return Build(out=out, runtime=name, executables=tuple(links))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vpccni.cniplugin.standalone", description=__doc__.split("\n")[0]
    )
    p.add_argument("out", type=Path, help="where the executables and .vpccni/ go (e.g. /app or /opt/cni/bin)")
    p.add_argument("--python", help="the interpreter to pack (default: the one running this)")
    p.add_argument("--trampoline", type=Path, help="a trampoline already compiled (default: compile it)")
    p.add_argument("--cc", default=CC, help=f"the C compiler for the trampoline (default {CC})")
    args = p.parse_args(argv)
    try:
        result = build(args.out, python=args.python, trampoline=args.trampoline, cc=args.cc)
    except (BuildError, install.InstallError) as exc:
        print(f"standalone: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(path.name for path in result.executables)
    print(f"wrote {names} in {result.out} (files in {install.RUNTIME_DIR}/{result.runtime})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
