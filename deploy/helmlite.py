"""Render deploy/charts/aws-vpc-cni without a helm binary: a small Go-template subset, as `helm template`.

    python deploy/helmlite.py deploy/charts/aws-vpc-cni [-f my-values.yaml] [--set env.WARM_IP_TARGET=5] \
        [--release aws-vpc-cni] [--namespace kube-system] [--check deploy/aws-k8s-cni.yaml] [-o OUT]

No helm is installable from the registries this project may use, yet the chart must stay a real Helm chart
that `helm install` accepts. So the templates are written in a subset of Helm's language, and this module
renders exactly that subset; anything outside it is an error, never a silent difference.
`deploy/aws-k8s-cni.yaml` is this renderer's output for the default values, and a test keeps the two equal.

The subset:
- actions `{{ pipeline }}`, with `{{-` / `-}}` whitespace trimming and `{{/* comments */}}`;
- `if` / `else` / `end`, `range $k, $v := pipeline` (maps in sorted key order, lists by index; `.` is the
  element, `$` the root), `define "name"` in `_helpers.tpl`;
- operands: `.Values.a.b`, `.Release.Name`, `.Release.Namespace`, `.Chart.Name`, `.Chart.Version`,
  `.Chart.AppVersion`, `$`, `$var`, `$var.field`, `"strings"`, integers, `true`/`false`, `( pipeline )`;
- functions: include, toYaml, indent, nindent, quote, default, eq, ne, not, and, or, empty, printf (%s, %d),
  toString.
Output follows `helm template --include-crds`: `crds/` files verbatim first, then each non-empty template in
Helm's install order by kind, each as `---\\n# Source: <chart>/<path>\\n<trimmed content>\\n`.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Helm's InstallOrder (pkg/releaseutil/kind_sorter.go), the kinds this chart can produce.
INSTALL_ORDER = (
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy", "PodDisruptionBudget",
    "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
    "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
    "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
    "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
)  # fmt: skip


class TemplateError(ValueError):
    pass


# --- parsing -----------------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


@dataclass
class Text:
    text: str


@dataclass
class Action:
    pipeline: str


@dataclass
class If:
    pipeline: str
    then: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


@dataclass
class Range:
    key: str | None
    value: str
    pipeline: str
    body: list[Any] = field(default_factory=list)


@dataclass
class Define:
    name: str
    body: list[Any] = field(default_factory=list)


def _tokens(source: str, where: str) -> list[Text | tuple[str, str]]:
    """Text pieces and ('action', body) pairs, with Go's trim markers applied to the neighbouring text."""
    out: list[Text | tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            out.append(Text(text))
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            out.append(("action", body))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = source[pos:]
    if trim_next:
        tail = tail.lstrip()
    if "{{" in tail or "}}" in tail:
        raise TemplateError(f"{where}: unbalanced {{{{ }}}}")
    if tail:
        out.append(Text(tail))
    return out


_RANGE = re.compile(r"^range\s+(?:(\$\w+)\s*,\s*)?(\$\w+)\s*:=\s*(.+)$", re.DOTALL)
_DEFINE = re.compile(r'^define\s+"([^"]+)"$')


def parse(source: str, where: str) -> list[Any]:
    root: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = [(None, root)]
    for tok in _tokens(source, where):
        current = stack[-1][1]
        if isinstance(tok, Text):
            current.append(tok)
            continue
        body = tok[1]
        word = body.split(None, 1)[0] if body else ""
        if word == "if":
            node: Any = If(body[2:].strip())
            current.append(node)
            stack.append((node, node.then))
        elif word == "else":
            owner = stack[-1][0]
            if not isinstance(owner, If) or body != "else" or stack[-1][1] is owner.otherwise:
                raise TemplateError(f"{where}: only a plain {{{{ else }}}} inside an if is supported")
            stack[-1] = (owner, owner.otherwise)
        elif word == "range":
            m = _RANGE.match(body)
            if not m:
                raise TemplateError(
                    f"{where}: use {{{{ range $k, $v := ... }}}} or {{{{ range $v := ... }}}}"
                )
            node = Range(m.group(1), m.group(2), m.group(3).strip())
            current.append(node)
            stack.append((node, node.body))
        elif word == "define":
            m = _DEFINE.match(body)
            if not m or len(stack) != 1:
                raise TemplateError(f'{where}: define must be top level: {{{{ define "name" }}}}')
            node = Define(m.group(1))
            current.append(node)
            stack.append((node, node.body))
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError(f"{where}: {{{{ end }}}} without an opening action")
            stack.pop()
        elif word in ("with", "template", "block", "break", "continue") or ":=" in body.split("|")[0]:
            raise TemplateError(f"{where}: {{{{ {word} }}}} is outside the supported subset")
        else:
            current.append(Action(body))
    if len(stack) != 1:
        raise TemplateError(f"{where}: missing {{{{ end }}}}")
    return root


# --- evaluation --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\(|\)|\||[^\s()|]+)')


def _lex(expr: str) -> list[str]:
    out = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or not m.group(1):
            if expr[pos:].strip() == "":
                break
            raise TemplateError(f"cannot read {expr!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def truthy(value: Any) -> bool:
    """Go's template truth: false, 0, nil and empty strings, lists and maps are false."""
    return value not in (None, False, 0, "") and not (isinstance(value, (list, dict)) and not value)


def to_yaml(value: Any) -> str:
    """Helm's toYaml: block style, keys sorted, no trailing newline."""
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, width=1 << 16, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("...").removesuffix("\n")


def _indent(n: int, text: str) -> str:
    pad = " " * int(n)
    return "\n".join(pad + line for line in str(text).split("\n"))


def _printf(fmt: str, *args: Any) -> str:
    it = iter(args)

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        return str(_scalar(next(it)))

    return re.sub(r"%[sdv%]", sub, fmt)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        raise TemplateError("a value is missing (<no value>): set it in values.yaml")
    if isinstance(value, (dict, list)):
        raise TemplateError(f"cannot print a {type(value).__name__} directly: use toYaml")
    return str(value)


def _quote(*values: Any) -> str:
    return " ".join('"' + _scalar(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)


class Renderer:
    def __init__(self, defines: Mapping[str, list[Any]]) -> None:
        self._defines = defines
        self._funcs: dict[str, Callable[..., Any]] = {
            "toYaml": to_yaml,
            "indent": _indent,
            "nindent": lambda n, text: "\n" + _indent(n, text),
            "quote": _quote,
            "default": lambda d, v=None: v if truthy(v) else d,
            "eq": lambda a, b: a == b,
            "ne": lambda a, b: a != b,
            "not": lambda a: not truthy(a),
            "and": lambda *a: all(truthy(x) for x in a),
            "or": lambda *a: any(truthy(x) for x in a),
            "empty": lambda a: not truthy(a),
            "printf": _printf,
            "toString": _scalar,
        }

    def include(self, name: str, dot: Any, scope: dict[str, Any]) -> str:
        if name not in self._defines:
            raise TemplateError(f"include of unknown template {name!r}")
        return self.run(self._defines[name], dot, {"$": scope["$"]})

    def run(self, nodes: list[Any], dot: Any, scope: dict[str, Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Action):
                out.append(_scalar(self.pipeline(node.pipeline, dot, scope)))
            elif isinstance(node, If):
                branch = node.then if truthy(self.pipeline(node.pipeline, dot, scope)) else node.otherwise
                out.append(self.run(branch, dot, scope))
            elif isinstance(node, Range):
                out.append(self._range(node, dot, scope))
            elif isinstance(node, Define):
                continue
        return "".join(out)

    def _range(self, node: Range, dot: Any, scope: dict[str, Any]) -> str:
        items = self.pipeline(node.pipeline, dot, scope)
        if items is None:
            return ""
        if isinstance(items, dict):
            pairs = sorted(items.items())
        elif isinstance(items, list):
            pairs = list(enumerate(items))
        else:
            raise TemplateError(f"range over a {type(items).__name__}: {node.pipeline}")
        out = []
        for key, value in pairs:
            inner = dict(scope)
            if node.key:
                inner[node.key] = key
            inner[node.value] = value
            out.append(self.run(node.body, value, inner))
        return "".join(out)

    def pipeline(self, expr: str, dot: Any, scope: dict[str, Any]) -> Any:
        tokens = _lex(expr)
        result: Any = _MISSING
        for command in _split(tokens, "|"):
            result = self._command(command, dot, scope, result)
        return result

    def _command(self, toks: list[str], dot: Any, scope: dict[str, Any], piped: Any) -> Any:
        if not toks:
            raise TemplateError("empty command in a pipeline")
        head = toks[0]
        if head == "include":
            args = self._args(toks[1:], dot, scope, piped)
            if len(args) != 2:
                raise TemplateError('use {{ include "name" . }}')
            return self.include(args[0], args[1], scope)
        if head in self._funcs:
            return self._funcs[head](*self._args(toks[1:], dot, scope, piped))
        if re.fullmatch(r"[A-Za-z_]\w*", head) and head not in ("true", "false", "nil"):
            raise TemplateError(f"function {head!r} is outside the supported subset")
        args = self._args(toks, dot, scope, _MISSING)
        if len(args) != 1 or piped is not _MISSING:
            raise TemplateError(f"cannot call a value: {' '.join(toks)}")
        return args[0]

    def _args(self, toks: list[str], dot: Any, scope: dict[str, Any], piped: Any) -> list[Any]:
        args: list[Any] = []
        i = 0
        while i < len(toks):
            tok = toks[i]
            if tok == "(":
                depth, j = 1, i + 1
                while depth:
                    if j >= len(toks):
                        raise TemplateError("unbalanced parentheses")
                    depth += {"(": 1, ")": -1}.get(toks[j], 0)
                    j += 1
                args.append(self.pipeline(" ".join(toks[i + 1 : j - 1]), dot, scope))
                i = j
                continue
            args.append(self._operand(tok, dot, scope))
            i += 1
        if piped is not _MISSING:
            args.append(piped)
        return args

    def _operand(self, tok: str, dot: Any, scope: dict[str, Any]) -> Any:
        if tok.startswith('"'):
            return tok[1:-1].encode().decode("unicode_escape")
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "nil":
            return None
        if tok == ".":
            return dot
        if tok.startswith("."):
            return _field(dot, tok[1:].split("."))
        if tok.startswith("$"):
            name, _, rest = tok.partition(".")
            if name not in scope:
                raise TemplateError(f"undefined variable {name}")
            return _field(scope[name], rest.split(".")) if rest else scope[name]
        raise TemplateError(f"cannot read operand {tok!r}")


_MISSING = object()


def _split(tokens: list[str], sep: str) -> list[list[str]]:
    out: list[list[str]] = [[]]
    depth = 0
    for tok in tokens:
        depth += {"(": 1, ")": -1}.get(tok, 0)
        if tok == sep and depth == 0:
            out.append([])
        else:
            out[-1].append(tok)
    return out


def _field(value: Any, path: list[str]) -> Any:
    for part in path:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise TemplateError(f"cannot read field {part!r} of a {type(value).__name__}")
        value = value.get(part)
    return value


# --- charts ------------------------------------------------------------------------------------------------


def merge(base: Any, override: Any) -> Any:
    """Helm's values coalescing: maps merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return copy.deepcopy(override)


def set_value(values: dict[str, Any], assignment: str) -> None:
    """`--set a.b=c` (the value read as YAML, as helm does for true/false/numbers)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise TemplateError(f"--set {assignment!r}: use key.path=value")
    keys = path.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = yaml.safe_load(raw) if raw else ""


def _kind(doc: str) -> str:
    m = re.search(r"^kind:\s*(\S+)", doc, re.MULTILINE)
    return m.group(1) if m else ""


def _order(kind: str) -> int:
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def render_chart(
    chart_dir: Path,
    *,
    values: Mapping[str, Any] | None = None,
    release: str = "aws-vpc-cni",
    namespace: str = "kube-system",
) -> str:
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    merged = merge(defaults, dict(values or {}))
    root = {
        "Values": merged,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart.get("appVersion", ""),
        },
    }
    templates = sorted((chart_dir / "templates").glob("*"))
    defines: dict[str, list[Any]] = {}
    parsed: list[tuple[str, list[Any]]] = []
    for path in templates:
        rel = f"{chart['name']}/templates/{path.name}"
        nodes = parse(path.read_text(), rel)
        for node in nodes:
            if isinstance(node, Define):
                defines[node.name] = node.body
        if not path.name.startswith("_"):
            parsed.append((rel, nodes))
    renderer = Renderer(defines)
    docs: list[tuple[int, str, str]] = []
    for rel, nodes in parsed:
        text = renderer.run(nodes, root, {"$": root})
        for part in re.split(r"^---\s*$", text, flags=re.MULTILINE):
            part = part.strip()
            if part and any(line and not line.startswith("#") for line in part.splitlines()):
                docs.append((_order(_kind(part)), rel, part))
    out = [
        f"---\n# Source: {chart['name']}/crds/{p.name}\n{p.read_text().strip()}\n"
        for p in sorted((chart_dir / "crds").glob("*.yaml"))
    ]
    # Stable by kind, then by file, as Helm's sort keeps template order within a kind.
    out += [f"---\n# Source: {rel}\n{doc}\n" for _, rel, doc in sorted(docs, key=lambda d: (d[0], d[1]))]
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="helmlite", description="render the aws-vpc-cni chart (Helm subset)")
    p.add_argument("chart", type=Path)
    p.add_argument("-f", "--values", type=Path, action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--release", default="aws-vpc-cni")
    p.add_argument("--namespace", default="kube-system")
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--check", type=Path, help="fail unless this file equals the rendering")
    args = p.parse_args(argv)
    values: dict[str, Any] = {}
    for path in args.values:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    for assignment in args.set:
        set_value(values, assignment)
    text = render_chart(args.chart, values=values, release=args.release, namespace=args.namespace)
    if args.check:
        if args.check.read_text() != text:
            print(f"{args.check} is stale: run python deploy/helmlite.py {args.chart} -o {args.check}",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
