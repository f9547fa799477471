"""An import-linter contract type of our own: libraries that never read the process environment.

ipamd's `Settings` is the one reader of the environment; the libraries take typed configuration. import-linter
sees imports, not attribute reads, so this contract reads each module of the listed packages and reports
every `os.environ`, `os.environb`, `os.getenv`, `os.getenvb` and `from os import environ/getenv`.

Registered in pyproject.toml under `contract_types` (lint-imports runs from the repository root, which it puts
on `sys.path`).
"""

from __future__ import annotations

import ast
import importlib.util

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

ENVIRONMENT_READERS = frozenset({"environ", "environb", "getenv", "getenvb"})


def environment_reads(source: str) -> list[tuple[int, str]]:
    """(line, what) for every read of the process environment in `source`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENVIRONMENT_READERS
            and isinstance(node.value, ast.Name)
            and node.value.id in ("os", "posix")
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "posix"):
            for alias in node.names:
                if alias.name in ENVIRONMENT_READERS:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
    return found


class NoEnvironmentReadsContract(Contract):
    """Options: `packages` (the packages checked, with every submodule), `allow` (modules exempted, such as
    an entry point)."""

    type_name = "no_environment_reads"

    packages = fields.ListField(subfield=fields.StringField())
    allow = fields.SetField(subfield=fields.StringField(), required=False, default=set())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        reads: list[str] = []
        for package in self.packages:  # type: ignore[attr-defined]
            for module in sorted({package, *graph.find_descendants(package)}):
                if module in self.allow:  # type: ignore[attr-defined]
                    continue
                spec = importlib.util.find_spec(module)
                if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
                    continue
                with open(spec.origin, encoding="utf-8") as handle:
                    for line, what in environment_reads(handle.read()):
                        reads.append(f"{module}:{line} {what}")
        return ContractCheck(kept=not reads, metadata={"reads": reads})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for read in check.metadata["reads"]:
            output.print_error(f"{read} reads the environment", bold=False)
            output.new_line()
        output.print(
            "Libraries take typed configuration; add the variable to ipamd's settings registry and pass "
            "the value down from the wiring plan (vpccni.ipamd.plan)."
        )
