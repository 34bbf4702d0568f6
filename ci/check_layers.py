#!/usr/bin/env python3
"""The data flow runs one way (docs/design.md): checks that the workspace's
crates and each crate's top-level modules never import one that comes later.

- Crates: each crate's Cargo.toml [dependencies] must only name crates that
  come before it in CRATES.
- Modules: within a crate, `crate::m` imported from module `n` must come
  before `n` in that crate's MODULES order, so no two modules import each
  other and none imports a later one.

Exits 1 and names every offending import. Tests (`#[cfg(test)]` blocks and
tests/) are not checked: a test may use anything.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The flow, first to last.
CRATES = [
    "qroute-core",
    "qroute-store",
    "qroute-learn",
    "qroute-experiment",
    "qroute-lab",
    "qroute-gateway",
    "qroute-mock",
    "qroute-bench",
]
# Each crate's top-level modules, first to last. A module not listed is an
# error, so a new one gets a place in the flow.
MODULES = {
    "qroute-core": ["error", "calendar", "objects", "catalog", "dataset", "features", "frontier", "policy", "reward", "record", "store", "testing"],
    "qroute-store": ["codec", "data_file", "index_tables", "newest", "recent", "rewarded", "sled_store", "pg", "config", "writer", "pruner"],
    "qroute-learn": ["config", "grad", "adam", "learner", "torch", "answer_head", "prior", "offline", "registry_pg", "registry", "online", "watch"],
    "qroute-experiment": ["stats", "assign", "spec", "registry", "results"],
    "qroute-lab": ["plots", "bandits", "evaluate", "simulate", "ope", "export", "report", "experiment_report"],
    "qroute-gateway": ["embedded", "shared", "exec", "cache", "access", "server_config", "config", "engine", "http"],
    "qroute-mock": ["request", "answer", "stream", "openai", "anthropic", "gemini"],
    "qroute-bench": ["stream", "judges", "gauge", "compare", "suite", "suite_report"],
}


def code_without_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod … { … }` blocks (brace-matched)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def top_module(src: pathlib.Path, file: pathlib.Path) -> str:
    rel = file.relative_to(src).parts
    return rel[0].removesuffix(".rs")


def main() -> int:
    errors = []
    for crate in CRATES:
        toml = (ROOT / "crates" / crate / "Cargo.toml").read_text()
        deps = toml.split("[dependencies]", 1)[1].split("\n[", 1)[0]
        for dep in re.findall(r"^(qroute-[a-z]+)", deps, re.M):
            if CRATES.index(dep) >= CRATES.index(crate):
                errors.append(f"{crate} depends on {dep}, which comes later in the flow")
        src = ROOT / "crates" / crate / "src"
        order = MODULES[crate]
        for file in sorted(src.rglob("*.rs")):
            module = top_module(src, file)
            if module == "lib":
                continue
            if module not in order:
                errors.append(f"{file.relative_to(ROOT)}: module `{module}` has no place in {crate}'s flow (ci/check_layers.py)")
                continue
            # Comments (doc links included) name modules without importing them.
            code = re.sub(r"//[^\n]*", "", code_without_tests(file.read_text()))
            used_modules = set(re.findall(r"\bcrate::(\w+)", code))
            for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
                used_modules |= set(re.findall(r"^\s*(\w+)", g)[0] for g in group.split(",") if g.strip())
            if file.parent == src:  # a top-level module: `super::x` is `crate::x`
                used_modules |= set(re.findall(r"\bsuper::(\w+)", code))
                for group in re.findall(r"\bsuper::\{([^}]*)\}", code):
                    used_modules |= set(re.findall(r"^\s*(\w+)", g)[0] for g in group.split(",") if g.strip())
            for used in used_modules:
                if used in order and used != module and order.index(used) > order.index(module):
                    errors.append(f"{file.relative_to(ROOT)}: `{module}` imports `crate::{used}`, which comes later in {crate}'s flow")
    for e in errors:
        print(e)
    if not errors:
        print(f"layers: {len(CRATES)} crates, every import runs with the flow")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
