"""Static review of a submission's own code (never executed here): flag what can interfere
with tests that run in the same process, for the instructor to look at.

Code in the same kernel as the tests can always, in principle, fool them; the executor's
tamper checks catch the common ways at run time, and this scan names the suspicious
constructs so that a human looks at the notebook. A flag never changes a grade by itself.
"""

from __future__ import annotations

import ast
import re

from autograder.grade.notebook import HELPERS

# (pattern over dotted names used in the code, why it is suspicious); the first group is
# matched on any name, the second only on names that come from an import
_ANY = [
    (r"(^|\.)(ast_transformers|input_transformers_post|input_transformers_cleanup|"
     r"input_transformer_manager)$", "changes how IPython transforms later cells"),
    (r"(^|\.)set_custom_exc$", "installs a custom exception handler"),
    (r"(^|\.)(excepthook|showtraceback|CustomTB|custom_exceptions)$",
     "replaces exception handling or reporting"),
    (r"(^|\.)events\.register$", "registers an IPython event callback"),
    (r"^__builtins__(\.|$)", "touches builtins"),
]
_IMPORTED = [
    (r"^builtins(\.|$)", "touches builtins"),
    (r"^faultline\.checks\.", "touches the test helpers"),
    (r"^sys\.(settrace|setprofile|_getframe|modules|meta_path|path_hooks|excepthook)$",
     "reaches into the interpreter (tracing, frames or the import system)"),
    (r"^(inspect\.currentframe|gc\.get_referrers|gc\.get_objects)$",
     "reaches into other code's frames or objects"),
    (r"^(threading|_thread|multiprocessing|concurrent\.futures)\.",
     "starts threads or processes that outlive the cell"),
    (r"^(os\.(fork|forkpty|setsid|system|popen|spawn\w*|exec\w*|kill|killpg|_exit)|"
     r"subprocess\.|pty\.)", "starts, signals or replaces processes"),
    (r"^signal\.", "installs signal handlers"),
    (r"^(socket|urllib|http\.client|requests|aiohttp)(\.|$)", "uses the network"),
    (r"^os\.(environ|getenv)", "reads environment variables"),
    (r"^(ctypes|cffi)(\.|$)", "calls C directly"),
    (r"^(shutil\.rmtree|os\.(remove|unlink|rename|replace|chmod))$", "changes files"),
    (r"^sys\.exit$", "exits the interpreter"),
]
_COMPILED_ANY = [(re.compile(p), why) for p, why in _ANY]
_COMPILED_IMPORTED = [(re.compile(p), why) for p, why in _IMPORTED]


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call):
        inner = _dotted(node.func)
        if inner and inner.endswith("get_ipython"):
            parts.append("get_ipython()")
            return ".".join(reversed(parts))
    return None


def _always_true(fn: ast.FunctionDef | ast.Lambda) -> bool:
    body = fn.body if isinstance(fn, ast.FunctionDef) else [ast.Return(fn.body)]
    returns = [n for b in body for n in ast.walk(b) if isinstance(n, ast.Return)]
    return bool(returns) and all(
        isinstance(r.value, ast.Constant) and r.value.value is True for r in returns)


def scan_source(source: str) -> list[str]:
    """Reasons to look at this cell's code; [] when nothing is suspicious."""
    text = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    found: list[str] = []

    def add(reason: str) -> None:
        if reason not in found:
            found.append(reason)

    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name.split(".")[0]] = alias.name
                if alias.name.split(".")[0] in ("builtins", "ctypes", "gc"):
                    add(f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        if isinstance(node, ast.Attribute | ast.Name):
            name = _dotted(node)
            if name:
                head, _, rest = name.partition(".")
                for pattern, why in _COMPILED_ANY:
                    if pattern.search(name):
                        add(f"{why} ({name})")
                if head in imported:
                    full = imported[head] + ("." + rest if rest else "")
                    for pattern, why in _COMPILED_IMPORTED:
                        if pattern.search(full):
                            add(f"{why} ({full})")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name in ("__eq__", "__ne__", "__hash__", "__bool__", "__instancecheck__",
                             "__subclasscheck__", "__float__", "__index__"):
                why = "always returns True" if _always_true(node) else "is defined"
                add(f"{node.name} {why}: an answer object may compare equal to anything")
            if node.name in HELPERS:
                add(f"redefines the test helper {node.name}")
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name) and t.id in HELPERS:
                        add(f"rebinds the test helper {t.id}")
                    if isinstance(t, ast.Attribute) and t.attr in ("__eq__", "__class__"):
                        add(f"assigns {t.attr}")
                if isinstance(target, ast.Name) and target.id == "__eq__" and isinstance(
                        getattr(node, "value", None), ast.Lambda):
                    add("__eq__ is a lambda: an answer object may compare equal to anything")
        if isinstance(node, ast.Call):
            fn = _dotted(node.func) or ""
            if fn in ("open", "io.open", "pathlib.Path", "Path"):
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and (
                            arg.value.startswith(("/", "..")) or ".db" in arg.value):
                        add(f"opens a path outside its folder ({arg.value})")
            if fn in ("exec", "eval", "compile", "__import__", "importlib.import_module"):
                add(f"runs dynamically built code ({fn})")
            if fn in ("setattr", "delattr") and node.args:
                target = _dotted(node.args[0]) or ""
                if target.split(".")[0] in ("builtins", "__builtins__", "faultline", "sys"):
                    add(f"{fn} on {target}")
    return found
