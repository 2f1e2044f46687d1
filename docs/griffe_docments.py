"""A griffe extension: nbdev's docments (a comment after each parameter) become the Parameters section of the API page.

cbir documents parameters the nbdev way, `k: int = 10,  # how many results`, which docstring parsers do not see.
fastcore's `docments` reads those comments from the imported function; this extension appends them to the docstring
as a Google-style `Args:`/`Returns:` section that mkdocstrings renders as a table.
"""
from __future__ import annotations

import griffe


class DocmentsExtension(griffe.Extension):
    "Add a Parameters (and Returns) section built from the function's docments."

    def on_function_instance(self, *, node, func: griffe.Function, agent, **kwargs) -> None:
        obj = getattr(node, "obj", None)  # set when griffe inspects (force_inspection: true)
        if obj is None or not callable(obj): return
        try:
            from fastcore.docments import docments
            docs = docments(obj, full=False)
        except Exception:  # builtins, C extensions, functions without source
            return
        params = {k: " ".join(str(v).split()) for k, v in docs.items() if v and k not in ("self", "cls", "return")}
        ret = docs.get("return")
        text = func.docstring.value if func.docstring else ""
        if not (params or ret) or any(s in text for s in ("Args:", "Parameters:", "Returns:")): return
        lines = [text.rstrip(), ""] if text.strip() else []
        if params: lines += ["Args:"] + [f"    {k}: {v}" for k, v in params.items()] + [""]
        if ret: lines += ["Returns:", f"    {' '.join(str(ret).split())}"]
        func.docstring = griffe.Docstring("\n".join(lines).rstrip(), parent=func, parser=griffe.Parser.google,
                                         parser_options={"warn_missing_types": False})
