"""The house rules of the package's structure: no import circles between modules, no module importing another's private
names, no module-level __getattr__ re-exports, and one index contract (`IndexLike`) that every backend keeps."""
import ast
import functools
from pathlib import Path

import numpy as np
import pytest

import cbir
from cbir.index import INDEX_MEMBERS, Index, IndexBase, IndexLike
from cbir.search import Searcher

PKG = Path(cbir.__file__).parent
MODULES = {p.stem: p for p in PKG.glob("*.py") if p.stem not in ("__init__", "_modidx")}


def imports() -> tuple[dict, list]:
    "Edges module -> modules it imports (at any depth of the file), and imports of private names."
    edges, private = _imports()
    return {m: set(targets) for m, targets in edges.items()}, list(private)  # copies: callers may change them


@functools.lru_cache(maxsize=1)  # the files do not change during a run; the course tests ask once per lesson
def _imports() -> tuple[dict, list]:
    edges, private = {m: set() for m in MODULES}, []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom): continue
            target = (node.module or "").split(".")[-1]
            if not (node.level or (node.module or "").startswith("cbir")): continue
            if target in ("", "cbir"): edges[m] |= {a.name for a in node.names if a.name in MODULES and a.name != m}
            elif target in MODULES and target != m:
                edges[m].add(target)
                private += [f"{m} <- {target}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges[m] |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cbir.") and a.name.split(".")[1] in MODULES}
    return edges, private


def test_no_import_circles():
    edges, _ = imports()
    def reach(a):
        seen, todo = set(), [a]
        while todo:
            for b in edges[todo.pop()] - seen: seen.add(b); todo.append(b)
        return seen
    circles = sorted(f"{a} <-> {b}" for a in edges for b in reach(a) if a < b and a in reach(b))
    assert not circles, circles


def test_no_private_names_across_modules_and_no_module_getattr():
    _, private = imports()
    assert not private, private
    tricks = [m for m, p in MODULES.items() if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                                                   for n in ast.parse(p.read_text()).body)]
    assert not tricks, tricks


def test_core_is_the_floor():
    edges, _ = imports()
    assert edges["core"] == set()  # the shared helpers import no other module of the package


def test_backends_keep_the_index_contract(tmp_path):
    pytest.importorskip("pymilvus")
    from cbir.scale import MilvusIndex
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    faiss_ix = Index.build(x, [f"i{j}" for j in range(50)], kind="flat", metric="l2")
    milvus_ix = MilvusIndex.build(x, [f"i{j}" for j in range(50)], kind="flat", metric="l2", uri=str(tmp_path / "m.db"))
    for ix in (faiss_ix, milvus_ix):
        assert isinstance(ix, IndexLike) and isinstance(ix, IndexBase)
        assert all(hasattr(ix, m) for m in INDEX_MEMBERS)
    # the shared helpers give both backends the same answers and the same refusals
    np.testing.assert_array_equal(faiss_ix.rows_of(["i3", "i7"]), milvus_ix.rows_of(["i3", "i7"]))
    for ix in (faiss_ix, milvus_ix):
        with pytest.raises(ValueError, match="ids already in the index"): ix.checked_new_ids(["i1"], 1)
        with pytest.raises(ValueError, match="ids not in the index"): ix.rows_of(["nope"])


def test_searcher_refuses_what_is_not_an_index():
    class HalfIndex:
        dim, metric = 8, "l2"
        def search(self, queries, k=10): ...
    with pytest.raises(TypeError, match=r"IndexLike contract .* lacks \['embedder_config', 'ntotal'"):
        Searcher(None, HalfIndex())


INTERNAL_INVARIANTS = {("crossmodal", "RuntimeError")}  # a check of cbir's own work (a bug if it fires): keeps its traceback


def test_every_error_cbir_raises_is_a_cbir_error():
    "One error type for what the user can fix: the CLI prints a CbirError as one line, anything else keeps its traceback."
    import builtins
    from cbir import core
    found = set()
    for m, path in MODULES.items():
        module = __import__(f"cbir.{m}", fromlist=["_"])
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None: continue
            call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if not isinstance(call, ast.Name): continue  # re-raising a caught exception object
            cls = getattr(module, call.id, None) or getattr(builtins, call.id, None)
            if isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, core.CbirError):
                found.add((m, call.id))
    assert found == INTERNAL_INVARIANTS, f"raise a cbir.core error class instead (InputError, NotFoundError, ...): {sorted(found - INTERNAL_INVARIANTS)}"


def test_the_cli_is_generated_from_the_command_functions():
    "Each option's default is the function's default: declared once (cbir.cli.COMMANDS)."
    import inspect
    from cbir.cli import COMMANDS, build_parser
    subs = build_parser()._subparsers._group_actions[0].choices
    for name, cmd in COMMANDS.items():
        params = inspect.signature(cmd.fn).parameters
        for action in subs[name]._actions:
            if action.dest == "help": continue
            assert action.dest in params, (name, action.dest)
            if params[action.dest].default is not inspect.Parameter.empty: assert action.default == params[action.dest].default, (name, action.dest)
            assert action.help, (name, action.dest)  # every option documented (from the parameter's comment)
