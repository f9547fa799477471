"""Runs the single-file ``aws-cni``: the shim's modules, embedded in the file, given to the import system.

``bundle`` writes the file and explains its layout. This module is embedded too, as code (or as source
for an interpreter whose bytecode differs from the builder's); the file's first lines execute it and call
:func:`start`. It imports only modules built into the interpreter and stays plain enough to parse on old
interpreters, so that a too-old one can say so as a CNI error.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

MIN_PYTHON = (3, 7)
TOO_OLD = (
    '{"cniVersion":"1.1.0","code":999,"details":"",'
    '"msg":"aws-cni needs python3 >= %d.%d on the host, found %s"}'
)
# Where tracebacks say the bundled modules live (the sources come from the payload).
PATH_PREFIX = "aws-cni/"

# importlib.machinery.ModuleSpec, without importing importlib.machinery (sys's own spec is one).
_ModuleSpec = type(sys.__spec__)


def filename(name: str, is_package: bool) -> str:
    """The file name a module's code is compiled under: ``aws-cni/vpccni/cniplugin/wire.py``."""
    path = name.replace(".", "/")
    return PATH_PREFIX + (path + "/__init__.py" if is_package else path + ".py")


def unpack_sources(blob: str) -> "dict[str, tuple[bool, bytes]]":
    """The embedded sources (zlib, base64): {module name: (is package, UTF-8 source)}."""
    import binascii
    import marshal
    import zlib

    modules = marshal.loads(zlib.decompress(binascii.a2b_base64(blob)))
    return modules  # type: ignore[no-any-return]


class BundleFinder:
    """Finds the bundled modules (first on ``sys.meta_path``) and executes them (their loader).

    ``modules`` maps every bundled name to (is package, marshalled code), the code being None for a module
    to compile from the embedded sources (on another interpreter, or one only slow paths import). A module
    is unmarshalled or compiled only when something imports it.
    """

    def __init__(self, *, modules: "dict[str, tuple[bool, bytes | None]]", sources: str) -> None:
        self._modules = modules
        self._sources_blob = sources
        self._sources: dict[str, tuple[bool, bytes]] | None = None

    def _source(self, name: str) -> "bytes | None":
        if self._sources is None:
            self._sources = unpack_sources(self._sources_blob)
        entry = self._sources.get(name)
        return None if entry is None else entry[1]

    def find_spec(
        self, name: str, path: "Sequence[str] | None" = None, target: "ModuleType | None" = None
    ) -> "ModuleSpec | None":
        entry = self._modules.get(name)
        if entry is None:
            return None
        # A loader by protocol (create_module, exec_module), not by importlib.abc.Loader's class.
        return _ModuleSpec(name, self, origin=filename(name, entry[0]), is_package=entry[0])  # type: ignore[arg-type]

    def create_module(self, spec: "ModuleSpec") -> None:
        return None  # the import system's default module object

    def exec_module(self, module: "ModuleType") -> None:
        name = module.__spec__.name  # type: ignore[union-attr]
        is_package, data = self._modules[name]
        if data is not None:
            import marshal

            code = marshal.loads(data)
        else:
            code = compile(self._source(name) or b"", filename(name, is_package), "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, name: str) -> "str | None":
        """For tracebacks (linecache asks the module's loader)."""
        source = self._source(name)
        return None if source is None else source.decode("utf-8")


def cache_path(script: str) -> str:
    """Where the modules compiled by this host's interpreter are kept: beside the executable, hidden
    (``/opt/cni/bin/.aws-cni.code``); runtimes only ever execute a plugin by its own name."""
    head, _, tail = script.rpartition("/")
    return (head + "/" if head else "") + "." + tail + ".code"


def _cache_key(sources: str) -> bytes:
    """This interpreter's bytecode magic and a checksum of the embedded sources: a cache written by another
    interpreter or for another build of the file never matches."""
    import zlib

    magic = getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", b"")
    return b"aws-cni:" + magic + b"%08x:" % zlib.crc32(sources.encode("ascii"))


def compiled_modules(sources: str, cache: "str | None") -> "dict[str, tuple[bool, bytes | None]]":
    """Every module compiled by this interpreter (one whose bytecode differs from the builder's), read from
    ``cache`` when an earlier call left it there for this very file, else compiled now and saved there for
    the next call (best effort: a read-only or full disk only costs the compile again)."""
    import marshal

    key = _cache_key(sources)
    if cache is not None:
        try:
            with open(cache, "rb") as f:
                data = f.read()
            if data.startswith(key):
                return marshal.loads(data[len(key) :])  # type: ignore[no-any-return]
        except (OSError, ValueError, EOFError, TypeError):
            pass  # absent or damaged: compile below and replace it
    code: dict[str, tuple[bool, bytes | None]] = {}
    for name, (is_package, source) in unpack_sources(sources).items():
        compiled = compile(source, filename(name, is_package), "exec", dont_inherit=True)
        code[name] = (is_package, marshal.dumps(compiled))
    if cache is not None:
        import posix

        tmp = f"{cache}.{posix.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(key + marshal.dumps(code))
            posix.rename(tmp, cache)  # atomic: a concurrent call reads the old file or the new one
        except OSError:
            try:
                posix.unlink(tmp)
            except OSError:
                pass
    return code


def start(
    code: "dict[str, tuple[bool, bytes | None]] | None", sources: str, main: str = "vpccni.cniplugin.main"
) -> None:
    """The executable's entry: check the interpreter, make the modules importable, run ``main``'s
    ``main(skip_teardown=True)`` (``aws-cni``'s by default).

    ``code`` is None when the interpreter cannot use the builder's code: the modules compiled by this
    interpreter come from the cache beside the executable, or are compiled (and cached) now.
    """
    if sys.version_info < MIN_PYTHON:
        found = sys.version.split()[0]
        sys.stdout.write(TOO_OLD % (MIN_PYTHON[0], MIN_PYTHON[1], found) + "\n")
        sys.exit(1)
    if code is None:
        script = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c") else None
        code = compiled_modules(sources, cache_path(script) if script else None)
    sys.meta_path.insert(0, BundleFinder(modules=code, sources=sources))
    __import__(main, None, None, ["main"]).main(skip_teardown=True)
