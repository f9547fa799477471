"""Regenerate vpccni.rpc's gRPC stubs from ``packages/rpc/proto/rpc.proto`` (``nox -s codegen``).

``python scripts/codegen.py``          rewrites ``packages/rpc/src/vpccni/rpc/generated/``;
``python scripts/codegen.py --check``  regenerates into a temporary folder and exits 1 with a diff summary
                                       when the committed stubs differ (stale proto or other grpcio-tools).

The generated code depends on the grpcio-tools version, so the version used is pinned here: a check run
with another version says so instead of reporting a misleading diff.
"""

from __future__ import annotations

import argparse
import difflib
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "packages/rpc/proto"
OUT_DIR = ROOT / "packages/rpc/src/vpccni/rpc/generated"
GRPCIO_TOOLS_VERSION = "1.81.1"

INIT = '"""Generated from packages/rpc/proto/rpc.proto by scripts/codegen.py: do not edit."""\n'


def _installed_tools_version() -> str:
    from importlib.metadata import version

    return version("grpcio-tools")


def generate(out: pathlib.Path) -> None:
    """Run protoc (from grpcio-tools) on rpc.proto and write importable stubs into ``out``."""
    import grpc_tools
    from grpc_tools import protoc

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_DIR / "rpc.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO_DIR / 'rpc.proto'}")
    # protoc writes a top-level "import rpc_pb2"; the stubs live in a package, so import relatively.
    grpc_file = out / "rpc_pb2_grpc.py"
    text = re.sub(r"(?m)^import rpc_pb2 as ", "from . import rpc_pb2 as ", grpc_file.read_text())
    grpc_file.write_text(text)
    (out / "__init__.py").write_text(INIT)


def _files(folder: pathlib.Path) -> dict[str, str]:
    return {
        p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in {".py", ".pyi"}
    }


def stale_report(committed: pathlib.Path, fresh: pathlib.Path) -> list[str]:
    """Differences between the committed stubs and freshly generated ones, one summary line each."""
    old, new = _files(committed) if committed.exists() else {}, _files(fresh)
    report = []
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            report.append(f"missing: {name}")
        elif name not in new:
            report.append(f"not generated any more: {name}")
        elif old[name] != new[name]:
            diff = list(
                difflib.unified_diff(old[name].splitlines(), new[name].splitlines(), lineterm="", n=0)
            )
            changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
            report.append(f"differs: {name} ({changed} changed lines)")
            report.extend("    " + line for line in diff[2:12])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail when the committed stubs are stale")
    opts = parser.parse_args(argv)
    tools = _installed_tools_version()
    if tools != GRPCIO_TOOLS_VERSION:
        print(
            f"grpcio-tools {tools} is installed but the stubs are generated with {GRPCIO_TOOLS_VERSION}: "
            f"pip install grpcio-tools=={GRPCIO_TOOLS_VERSION} (or update GRPCIO_TOOLS_VERSION here)",
            file=sys.stderr,
        )
        return 2
    if not opts.check:
        generate(OUT_DIR)
        print(f"regenerated {OUT_DIR.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp) / "generated"
        generate(fresh)
        report = stale_report(OUT_DIR, fresh)
    if report:
        print(
            "the committed gRPC stubs are stale: run `nox -s codegen` and commit the result", file=sys.stderr
        )
        print("\n".join(report), file=sys.stderr)
        return 1
    print("gRPC stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
