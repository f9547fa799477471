"""Generate awsutils' trimmed botocore data from the installed botocore (see ``vpccni.awsutils.ec2model``).

Writes ``packages/awsutils/src/vpccni/awsutils/botocore_data/``:
- ``ec2/<api version>/service-2.json``: the operations in ``EC2_OPERATIONS`` and every shape they reach,
  with protocol metadata as botocore ships it and the documentation strings dropped;
- ``endpoints.json``: every partition as botocore ships it, with only the services in ``ENDPOINT_SERVICES``.

Idempotent: the output depends only on the installed botocore and the two lists. ``--check`` exits 1 when
the committed files differ from what would be generated (after a botocore upgrade or a new EC2 call: run
this script without ``--check``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

import botocore.loaders
from vpccni.awsutils.ec2model import (
    DATA_DIR,
    EC2_API_VERSION,
    EC2_OPERATIONS,
    ENDPOINT_SERVICES,
    endpoints_path,
    model_path,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DROPPED_KEYS = frozenset({"documentation", "documentationUrl"})


def _without_docs(ref: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ref.items() if k not in DROPPED_KEYS}


def _shape_refs(shape: dict[str, Any]) -> list[str]:
    refs = [shape[k]["shape"] for k in ("member", "key", "value") if k in shape]
    refs.extend(member["shape"] for member in shape.get("members", {}).values())
    return refs


def trim_model(model: dict[str, Any], operations: tuple[str, ...]) -> dict[str, Any]:
    missing = [op for op in operations if op not in model["operations"]]
    if missing:
        raise SystemExit(f"the installed botocore's EC2 model has no {', '.join(missing)}")
    ops: dict[str, Any] = {}
    pending: list[str] = []
    for name in operations:
        op = model["operations"][name]
        ops[name] = _without_docs(op)
        pending.extend(op[k]["shape"] for k in ("input", "output") if k in op)
        pending.extend(err["shape"] for err in op.get("errors", []))
    reached: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending.extend(_shape_refs(model["shapes"][name]))
    shapes: dict[str, Any] = {}
    for name, shape in model["shapes"].items():  # botocore's order: members serialize in it
        if name in reached:
            trimmed = _without_docs(shape)
            if "members" in shape:
                trimmed["members"] = {k: _without_docs(v) for k, v in shape["members"].items()}
            shapes[name] = trimmed
    return {"version": model["version"], "metadata": model["metadata"], "operations": ops, "shapes": shapes}


def trim_endpoints(endpoints: dict[str, Any], services: tuple[str, ...]) -> dict[str, Any]:
    partitions = []
    for partition in endpoints["partitions"]:
        kept = {k: v for k, v in partition["services"].items() if k in services}
        partitions.append({**partition, "services": kept})
    return {**endpoints, "partitions": partitions}


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1) + "\n"


def render() -> dict[pathlib.Path, str]:
    # botocore's own data only: an AWS_DATA_PATH override must not leak into the committed files.
    loader = botocore.loaders.Loader(include_default_search_paths=False)
    loader.search_paths.append(botocore.loaders.Loader.BUILTIN_DATA_PATH)
    model = loader.load_service_model("ec2", "service-2", api_version=EC2_API_VERSION)
    endpoints = loader.load_data("endpoints")
    return {
        model_path(): _dump(trim_model(model, EC2_OPERATIONS)),
        endpoints_path(): _dump(trim_endpoints(endpoints, ENDPOINT_SERVICES)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed files are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    where = DATA_DIR.relative_to(ROOT)
    if args.check:
        if stale:
            names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
            print(f"{names} stale: run `python scripts/gen_ec2_model.py`", file=sys.stderr)
            return 1
        print(f"{where} is up to date")
    elif not stale:
        print(f"{where} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
