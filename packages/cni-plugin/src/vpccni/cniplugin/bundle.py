"""Build the self-contained ``aws-cni`` for ``/opt/cni/bin``: ``python -m vpccni.cniplugin.bundle OUT``.

The output is a zipapp run by the host's system interpreter (``#!/usr/bin/python3 -IS``: isolated, no
site, so nothing installed on the host can interfere). It holds this package's shim modules as source
plus unchecked hash-based ``.pyc`` files for the building interpreter (zipimport cannot cache compiled
code, so without them every invocation would compile the shim again; another interpreter version simply
ignores them and compiles the source). ``vpccni`` stays a namespace package inside the archive.

Minimum host interpreter: Python 3.9 (``socket.send_fds``); the archive says so in a CNI error otherwise.
"""

from __future__ import annotations

import os
import pathlib
import py_compile
import stat
import sys
import tempfile
import zipfile

SHEBANG = b"#!/usr/bin/python3 -IS\n"
MIN_PYTHON = (3, 9)
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
# Only what the executable needs: the builder and the test doubles stay out.
EXCLUDED = {"bundle.py", "testing.py"}
# Fixed timestamp: the same sources give a byte-identical archive.
ZIP_DATE = (2020, 1, 1, 0, 0, 0)

_TOO_OLD = (
    '{"cniVersion":"1.1.0","code":999,"details":"",'
    '"msg":"aws-cni needs python3 >= %d.%d on the host, found %s"}'
)
MAIN = f"""import sys
if sys.version_info < {MIN_PYTHON!r}:
    sys.stdout.write({_TOO_OLD!r} % ({MIN_PYTHON[0]}, {MIN_PYTHON[1]}, sys.version.split()[0]) + "\\n")
    sys.exit(1)
from vpccni.cniplugin.main import main
main()
"""


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    zf.writestr(info, data)


def _add_dir(zf: zipfile.ZipFile, name: str) -> None:
    # zipimport finds a namespace package only through an explicit directory entry.
    info = zipfile.ZipInfo(name.rstrip("/") + "/", ZIP_DATE)
    info.external_attr = (stat.S_IFDIR | 0o755) << 16
    zf.writestr(info, b"")


def _compiled(source: pathlib.Path, name: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "module.pyc"
        py_compile.compile(
            str(source), cfile=str(out), dfile=name, doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )  # fmt: skip
        return out.read_bytes()


def build(out: str | os.PathLike[str]) -> pathlib.Path:
    """Write the executable archive to ``out`` (mode 0755) and return its path."""
    target = pathlib.Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(SHEBANG)
        with zipfile.ZipFile(f, "w") as zf:
            _add(zf, "__main__.py", MAIN.encode())
            _add_dir(zf, "vpccni")
            _add_dir(zf, "vpccni/cniplugin")
            for source in sorted(PACKAGE_DIR.glob("*.py")):
                if source.name in EXCLUDED:
                    continue
                name = f"vpccni/cniplugin/{source.name}"
                _add(zf, name, source.read_bytes())
                _add(zf, name + "c", _compiled(source, name))
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
