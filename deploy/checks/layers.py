#!/usr/bin/env python3
"""Checks that the code reads top to bottom.

1. No module cycle inside any crate: module A uses module B when A's code
   (tests aside) names `crate::B` or `super::B`; the graph of uses must have
   no cycle.
2. Crates depend one way: services and the CLI on the runtime, the
   operator API and downloads; those on the contract; never back. Each
   crate has a layer below, and may depend only on sluice crates of lower
   layers.

Exit 1 with each cycle or backward dependency named, 0 otherwise.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lower layers first; a crate may depend on sluice crates of lower layers only.
LAYERS = {
    "sluice-messages": 0,  # the contract
    "sluice-spec": 0,  # the import spec format users write
    "sluice-download": 1,
    "sluice-stage": 1,
    "sluice-postgres": 1,
    "sluice-levels": 2,  # reading a file of an import run with a spec
    "sluice-operator": 2,
    "sluice-importer": 3,
    "sluice-fetcher": 3,
    "sluice-saver": 3,
    "sluice-devkit": 4,  # test and demo machinery: never in a service
    "sluice-cli": 5,
    "sluice-console": 5,
    "sluice-bench": 6,
    "sluice-e2e": 6,
}

PATH = re.compile(r"\b(?:crate|super)::(\{|[a-z_][a-z0-9_]*)")


def strip_tests(text: str) -> str:
    """The file without its `#[cfg(test)] mod tests { … }` block."""
    marker = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: marker.start()] if marker else text


def modules(src: Path) -> dict[str, Path]:
    found = {}
    for path in src.rglob("*.rs"):
        rel = path.relative_to(src)
        if rel.name in ("lib.rs", "main.rs") and len(rel.parts) == 1:
            continue
        name = rel.parts[0].removesuffix(".rs")
        found.setdefault(name, path)
    return found


def top_level_items(text: str, start: int) -> list[str]:
    """The comma-separated items of the brace group opening at `start`."""
    items, depth, current = [], 0, ""
    for ch in text[start + 1:]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        current += ch
    return items + [current]


def reexports(src: Path) -> dict[str, str]:
    """Names the crate root re-exports (`pub use module::Name`), by module:
    `crate::Name` depends on that module."""
    found = {}
    for root in ("lib.rs", "main.rs"):
        if not (src / root).exists():
            continue
        text = (src / root).read_text()
        for match in re.finditer(r"pub use ([a-z_][a-z0-9_]*)::(\{|\w+)", text):
            module = match.group(1)
            items = top_level_items(text, match.end() - 1) if match.group(2) == "{" else [match.group(2)]
            for item in items:
                found[item.strip().split(" as ")[-1].strip()] = module
    return found


def uses(path: Path, names: set[str], own: str, aliases: dict[str, str] | None = None) -> set[str]:
    aliases = aliases or {}
    text = strip_tests(path.read_text())
    out = set()
    for match in PATH.finditer(text):
        if match.group(1) == "{":
            heads = [item.strip().split("::")[0].strip() for item in top_level_items(text, match.end() - 1)]
        else:
            heads = [match.group(1)]
        heads = [aliases.get(h, h) for h in heads]
        out.update(h for h in heads if h in names and h != own)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def main() -> int:
    problems = []
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    for member in workspace["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        if name not in LAYERS:
            problems.append(f"{member}: crate {name} has no layer in deploy/checks/layers.py")
            continue
        for section in ("dependencies", "build-dependencies"):
            for dep in manifest.get(section, {}):
                if dep in LAYERS and LAYERS[dep] >= LAYERS[name]:
                    problems.append(f"{name} depends on {dep}: a crate of its own layer or above")
        src = ROOT / member / "src"
        if not src.is_dir():
            continue
        mods = modules(src)
        aliases = reexports(src)
        graph = {m: uses(p, set(mods), m, aliases) for m, p in mods.items()}
        for cycle in cycles(graph):
            problems.append(f"{name}: module cycle {' → '.join(cycle)}")
    for problem in problems:
        print(f"layers: {problem}")
    if not problems:
        print(f"layers: {len(workspace['workspace']['members'])} crates, no module cycle, every dependency points down")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
