#!/usr/bin/env python3
"""Fails when the library's modules depend on each other in a cycle (scripts/test.sh).

    module-cycles.py [--graph] [SRC_DIR]
    module-cycles.py --self-test

Reads every `.rs` file under SRC_DIR (default `src`, `main.rs` excluded: it is the binary,
which sees the library from outside) and collects the paths it names: `use` trees, with
their braces expanded, and `crate::`, `super::` and `self::` paths and paths through child
modules anywhere in the code, comments and string literals left out. Each path is resolved
to the deepest module that exists, then cut to a node of the graph: a top-level module
(`proxy`, `sts`), or a submodule of `config`, whose parts must not lean on each other in a
circle either. Test code (`#[cfg(test)]` items, and modules declared under one) is left
out: a test may drive a submodule through its parent's API.

A cycle is a strongly connected component of more than one node; each is printed with an
edge list and the file and line where each edge is made, and the exit status is 1.
`--graph` prints every edge as well. `--self-test` runs the check on small crates written
for it, one with a cycle in each form of path it reads, and fails unless each is found and
a crate whose only back edges are in tests, comments and strings passes.
"""

import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

# Submodules of these are nodes of their own; every other module is folded into its
# top-level module.
SPLIT = {"config"}


# A raw string's opening, `r#"` or `br"`.
RAW = re.compile(r'b?r(#*)"')
# A char literal; a lifetime (`'a`) has no closing quote.
CHAR = re.compile(r"'(\\(x..|u\{[0-9a-fA-F]+\}|.)|[^\\'])'")


def strip(text):
    """The code without comments, string and char literals; newlines kept for line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif (m := RAW.match(text, i)) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and (m := CHAR.match(text, i)):
            out.append("' '")
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


CFG_TEST = re.compile(r"#\[cfg\(test\)\]")


def without_tests(code):
    """The code less every `#[cfg(test)]` item (through its closing brace, or its `;`)."""
    while m := CFG_TEST.search(code):
        i = m.end()
        while i < len(code) and code[i] not in "{;":
            i += 1
        if i < len(code) and code[i] == "{":
            depth = 0
            while i < len(code):
                depth += {"{": 1, "}": -1}.get(code[i], 0)
                i += 1
                if depth == 0:
                    break
        else:
            i += 1
        code = code[: m.start()] + "\n" * code.count("\n", m.start(), i) + code[i:]
    return code


def code_of(path):
    """A file's code as the graph reads it; `pub(in path)` names a scope, not a use."""
    return re.sub(r"pub\s*\(\s*in\s+[^)]*\)", "pub", without_tests(strip(path.read_text())))


def module_of(path, src):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts == ["lib"]:
        return ()
    return tuple(parts)


def expand(tree):
    """`a::{b, c::{d, self}}` as the paths it imports: a::b, a::c::d, a::c."""
    tree = re.sub(r"\s*(::|[{},])\s*", r"\1", tree.strip())
    items, depth, start = [], 0, 0
    for i, c in enumerate(tree):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            items.append(tree[start:i])
            start = i + 1
    items.append(tree[start:])
    paths = []
    for item in filter(None, items):
        brace = item.find("{")
        if brace < 0:
            segs = re.sub(r"\s+as\s+\w+$", "", item).split("::")
            paths.append([s for s in segs if s and s != "*"])
            continue
        prefix = [s for s in item[:brace].split("::") if s]
        for sub in expand(item[brace + 1 : item.rindex("}")]):
            paths.append(prefix + ([] if sub == ["self"] else sub))
    return paths


USE = re.compile(r"\buse\s+([^;]+);")
PATH = re.compile(r"(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
MOD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)


def resolve(path, here, children, modules):
    """The module a path names, from the module `here`; None for an external crate."""
    if not path:
        return None
    head, rest = path[0], path[1:]
    if head == "crate":
        base = ()
    elif head == "self":
        base = here
    elif head == "super":
        base = here[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif head in children.get(here, ()):
        base, rest = here + (head,), rest
    else:
        return None
    target = base
    for seg in rest:
        if target + (seg,) in modules:
            target = target + (seg,)
        else:
            break
    return target


def node(module):
    if not module:
        return "crate"
    if module[0] in SPLIT and len(module) > 1:
        return "::".join(module[:2])
    return module[0]


def graph(src):
    files = [p for p in sorted(src.rglob("*.rs")) if p != src / "main.rs"]
    texts = {module_of(p, src): (p, code_of(p)) for p in files}
    children = {m: set(MOD.findall(code)) for m, (_, code) in texts.items()}
    # Only modules declared outside test code: a `#[cfg(test)] mod tests;` file is dropped.
    modules, todo = {()}, [()]
    while todo:
        m = todo.pop()
        for child in children.get(m, ()):
            if m + (child,) in texts and m + (child,) not in modules:
                modules.add(m + (child,))
                todo.append(m + (child,))
    texts = {m: t for m, t in texts.items() if m in modules}
    edges = defaultdict(list)
    for here, (path, code) in texts.items():
        found = []
        for m in USE.finditer(code):
            line = code.count("\n", 0, m.start()) + 1
            found += [(p, line) for p in expand(m.group(1))]
        for m in PATH.finditer(code):
            line = code.count("\n", 0, m.start()) + 1
            found.append((m.group(1).split("::"), line))
        for p, line in found:
            target = resolve(p, here, children, modules)
            if target is None:
                continue
            a, b = node(here), node(target)
            if a != b and b != "crate":
                edges[(a, b)].append(f"{path}:{line}")
    return edges


def cycles(edges):
    """Tarjan's strongly connected components of more than one node."""
    succ = defaultdict(set)
    for a, b in edges:
        succ[a].add(b)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(set(succ) | {b for _, b in edges}):
        if v not in index:
            visit(v)
    return out


# Each case: files of a crate, and whether it must have a cycle. `a` always reaches `b`;
# the back edge takes the form the case names.
SELF_TEST = {
    "inline crate:: path": ({"b.rs": "fn f() { crate::a::g(); }"}, True),
    "grouped use": ({"b.rs": "use crate::{x::Y, a::{self, Z}};"}, True),
    "super:: from a child": (
        {"b.rs": "mod c;", "b/c.rs": "use super::super::a::Z;"},
        True,
    ),
    "use through a child module": (
        {"b.rs": "mod c;\nuse c::Z;", "b/c.rs": "use crate::a::Z;"},
        True,
    ),
    "config submodules": (
        {
            "config.rs": "mod p;\nmod q;",
            "config/p.rs": "use super::q::X;",
            "config/q.rs": "use crate::config::p::Y;",
        },
        True,
    ),
    "only tests, comments and strings": (
        {
            "b.rs": (
                "// crate::a::g\n/* crate::a::g */\nconst S: &str = \"crate::a::g\";\n"
                "#[cfg(test)]\nmod tests { use crate::a::g; }"
            )
        },
        False,
    ),
}


def self_test():
    failed = 0
    for name, (files, cyclic) in SELF_TEST.items():
        with tempfile.TemporaryDirectory() as d:
            src = Path(d)
            crate = {"lib.rs": "mod a;\nmod b;\nmod x;", "a.rs": "use crate::b::Z;", "x.rs": ""}
            crate.update(files)
            if "config.rs" in files:
                crate["lib.rs"] += "\nmod config;"
            for rel, text in crate.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_text(text)
            found = cycles(graph(src))
            ok = bool(found) == cyclic
            failed += not ok
            print(f"{'ok' if ok else 'FAILED'}: {name}: {found or 'no cycle'}")
    return 1 if failed else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    show = "--graph" in argv
    args = [a for a in argv if a != "--graph"]
    src = Path(args[0] if args else "src")
    edges = graph(src)
    if show:
        for (a, b), where in sorted(edges.items()):
            print(f"{a} -> {b}  ({where[0]})")
    found = cycles(edges)
    nodes = {n for e in edges for n in e}
    if not found:
        print(f"module-cycles: no cycle among {len(nodes)} modules, {len(edges)} edges")
        return 0
    for comp in found:
        print(f"cycle among {len(comp)} modules: {', '.join(comp)}")
        members = set(comp)
        for (a, b), where in sorted(edges.items()):
            if a in members and b in members:
                more = f" (+{len(where) - 1} more)" if len(where) > 1 else ""
                print(f"  {a} -> {b}  at {where[0]}{more}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
