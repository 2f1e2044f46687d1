"""The API documents itself: nbdev's index (`cbir/_modidx.py`) lists every public function, class and method."""
import importlib
import inspect

import pytest

import cbir
from cbir._modidx import d as MODIDX

MODULES = sorted(MODIDX["syms"])


def _public_members(modname: str):
    "Public functions and classes defined in `modname`, and the public methods/properties defined on those classes."
    mod = importlib.import_module(modname)
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or getattr(obj, "__module__", None) != modname: continue
        yield modname, f"{modname}.{name}"
        if not inspect.isclass(obj): continue
        for attr, val in vars(obj).items():
            if attr.startswith("_"): continue
            fn = val.__func__ if isinstance(val, (classmethod, staticmethod)) else val.fget if isinstance(val, property) else val
            if not inspect.isfunction(fn): continue  # dataclass fields, constants, nn.Module plumbing
            alias_of = getattr(fn, "__name__", attr)
            if alias_of != attr and vars(obj).get(alias_of) is val: continue  # an alias (`forward = encode`) of a listed method
            # a method @patch-ed on from another module is indexed under that module
            if getattr(fn, "__module__", "").startswith("cbir."): yield fn.__module__, f"{fn.__module__}.{name}.{attr}"


@pytest.mark.parametrize("modname", MODULES)
def test_modidx_covers_public_api(modname):
    "Every public method is in nbdev's index, which happens when it is defined in the class or attached with @patch."
    missing = [s for m, s in _public_members(modname) if s not in MODIDX["syms"].get(m, {})]
    assert not missing, (f"not in cbir/_modidx.py (attach methods with fastcore's @patch, not `Class.meth = f`, "
                         f"then run nbdev-export): {missing}")


def test_modidx_lists_every_module():
    "Each exported module of the package is in the index."
    import pkgutil
    mods = {f"cbir.{m.name}" for m in pkgutil.iter_modules(cbir.__path__) if not m.name.startswith("_")}
    assert mods <= set(MODULES), f"modules missing from cbir/_modidx.py: {sorted(mods - set(MODULES))}"
