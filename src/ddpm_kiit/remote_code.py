# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Saved pipelines that carry their own code, so stock Diffusers loads them without ddpm-kiit (issue 23).

Diffusers loads a pipeline whose `model_index.json` names `_class_name: ["<module>", "<Class>"]` from `<module>.py` at
the folder's (or repository's) root, and a component named `["<module>", "<Class>"]` from `<component>/<module>.py`,
when the caller passes `trust_remote_code=True`. `write_remote_code` writes those modules beside the weights and
names them in `model_index.json`; `KiitDDPMPipeline.save_pretrained` calls it, so `push_to_hub`, `ddpm-kiit push`
and the training script's export carry the code too.

The modules are generated from the package's own source at save time (there is no second copy to keep in step):
`generate_module` parses the module that defines a class, keeps the top-level definitions the class needs,
follows the package's relative imports into other `ddpm_kiit` modules and inlines what is needed from them (their
modules first), keeps the external imports, and writes one file that imports only torch, Diffusers, NumPy (a
dependency of Diffusers, used by the schedulers) and the standard library. Methods marked `@package_only` are left
out (Diffusers' own method applies); methods marked `@needs_package` become a stub that says to install ddpm-kiit.

With ddpm-kiit imported, Diffusers never runs these files: `ddpm_kiit._register_with_diffusers` makes it use the
installed package's classes for the module files named in `REMOTE_MODULES`, so the same folder loads without
`trust_remote_code` (see `docs/hub.md`, "Loading, exactly").
"""

import ast
import functools
import importlib
import importlib.util
import inspect
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Tuple

PACKAGE = __name__.rpartition(".")[0]

# The module file each of our classes is written to: a pipeline's at the folder's root, a component's in the
# component's folder. Distinctive names, because Diffusers caches the modules of local folders by file name.
REMOTE_MODULES = {
    "KiitDDPMPipeline": "pipeline_kiit_ddpm",
    "KiitTextToImagePipeline": "pipeline_kiit_text2img",
    "SimpleUNet2DModel": "unet_kiit_simple",
    "KiitDDPMScheduler": "scheduling_kiit_ddpm",
    "ColdDiffusionScheduler": "scheduling_cold_diffusion",
    "BlurringDiffusionScheduler": "scheduling_blurring_diffusion",
}
# Module files that older versions wrote and that no longer are: a folder naming one loads with the package installed
# (`GaussianBlurScheduler` builds the class that replaced it) and, as before, through the file itself without it.
LEGACY_REMOTE_MODULES = {
    "GaussianBlurScheduler": "scheduling_gaussian_blur",
}

# What a generated module may import: these, and the standard library. NumPy is a dependency of Diffusers.
ALLOWED_IMPORTS = ("torch", "diffusers", "numpy")

MODEL_INDEX = "model_index.json"


def package_only(method):
    """Marks a method that generated modules leave out, so that the Diffusers method it overrides applies there
    (e.g. `from_pretrained`'s check of `model_index.json`, which needs nothing the stock loader lacks)."""
    method.__ddpm_kiit_package_only__ = True
    return method


def needs_package(method):
    """Marks a method that needs the installed package (e.g. `save_pretrained`, which writes the model card and
    generates this code); generated modules replace it with one that raises and says to install ddpm-kiit."""
    method.__ddpm_kiit_needs_package__ = True
    return method


def _decorator_name(decorator: ast.expr) -> Optional[str]:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)


def _decorator_names(node) -> set:
    return {_decorator_name(decorator) for decorator in getattr(node, "decorator_list", [])}


class _SourceModule:
    """One module of the package: its source, top-level definitions and what each imported name is bound to."""

    def __init__(self, name: str):
        module = importlib.import_module(name)
        self.name = name
        self.path = Path(inspect.getsourcefile(module))
        self.package = module.__package__
        self.source = self.path.read_text(encoding="utf-8")
        self.lines = self.source.splitlines()
        self.tree = ast.parse(self.source, str(self.path))
        self.definitions: Dict[str, ast.stmt] = {}
        self.imports: Dict[str, Tuple[str, Optional[str], Optional[str]]] = {}  # bound name -> (module, name, asname)
        self.relative: Dict[str, Tuple[str, str]] = {}  # bound name -> (absolute module, name there)
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.definitions[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            self.definitions[name.id] = node
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    self.imports[alias.asname or alias.name.split(".")[0]] = (alias.name, None, alias.asname)
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    bound = alias.asname or alias.name
                    if node.level:
                        target = importlib.util.resolve_name("." * node.level + (node.module or ""), self.package)
                        if bound != alias.name:
                            raise NotImplementedError(f"{self.path}: `import {alias.name} as {bound}` from {target}")
                        self.relative[bound] = (target, alias.name)
                    else:
                        self.imports[bound] = (node.module, alias.name, alias.asname)

    def display_path(self) -> str:
        """The module's file as the header names it, e.g. `ddpm_kiit/models/unet_simple.py`."""
        return self.name.replace(".", "/") + ("/__init__.py" if self.path.name == "__init__.py" else ".py")

    def methods_marked(self, node: ast.stmt) -> Tuple[List[ast.stmt], List[ast.stmt]]:
        """The `@package_only` and the `@needs_package` methods of a class definition."""
        if not isinstance(node, ast.ClassDef):
            return [], []
        methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
        return (
            [m for m in methods if "package_only" in _decorator_names(m)],
            [m for m in methods if "needs_package" in _decorator_names(m)],
        )

    def first_line(self, node: ast.stmt) -> int:
        """The 1-based first line of a definition: its decorators and the comment lines right above it."""
        line = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        while line > 1 and self.lines[line - 2].lstrip().startswith("#"):
            line -= 1
        return line

    def kept_nodes(self, node: ast.stmt) -> List[ast.AST]:
        """What of a definition a generated module keeps: all of it but its marked methods."""
        left_out, stubbed = self.methods_marked(node)
        if not (left_out or stubbed):
            return [node]
        dropped = {id(m) for m in left_out + stubbed}
        kept = [getattr(node, field) for field in ("decorator_list", "bases", "keywords")]
        return [item for group in kept for item in group] + [m for m in node.body if id(m) not in dropped]

    def text(self, node: ast.stmt, class_name: str) -> str:
        """The source of a definition as a generated module writes it."""
        left_out, stubbed = self.methods_marked(node)
        replaced = {self.first_line(m): (m, None) for m in left_out}
        replaced.update({self.first_line(m): (m, _stub(m, class_name)) for m in stubbed})
        out, line = [], self.first_line(node)
        while line <= node.end_lineno:
            if line in replaced:
                method, stub = replaced[line]
                if stub:
                    out.append(stub)
                line = method.end_lineno + 1
                if stub is None and line <= node.end_lineno and not self.lines[line - 1].strip():
                    line += 1  # and the blank line after a method left out
                continue
            out.append(self.lines[line - 1])
            line += 1
        return "\n".join(out).rstrip()


def _stub(method: ast.FunctionDef, class_name: str) -> str:
    indent = " " * method.col_offset
    decorators = [f"{indent}@{ast.unparse(d)}" for d in method.decorator_list if _decorator_name(d) != "needs_package"]
    return "\n".join(
        decorators
        + [
            f"{indent}def {method.name}(self, *args, **kwargs):",
            f"{indent}    raise NotImplementedError(",
            f'{indent}        "{class_name}.{method.name} needs the ddpm-kiit package: '
            '`pip install ddpm-kiit`, then "',
            f'{indent}        "`import ddpm_kiit` and load the pipeline again (no `trust_remote_code` needed)."',
            f"{indent}    )",
        ]
    )


@functools.lru_cache(maxsize=None)
def _module(name: str) -> _SourceModule:
    return _SourceModule(name)


def _local_imports(nodes) -> List[ast.stmt]:
    """The import statements inside kept definitions (a method's lazy import)."""
    return [imp for node in nodes for imp in ast.walk(node) if isinstance(imp, (ast.Import, ast.ImportFrom))]


def _libraries(statement: ast.stmt) -> set:
    """The top-level libraries an import statement reaches; "." for the package's own (relative) modules."""
    if isinstance(statement, ast.ImportFrom):
        return {"." if statement.level else statement.module.split(".")[0]}
    return {alias.name.split(".")[0] for alias in statement.names}


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def _allowed(library: str) -> bool:
    """Whether a generated module may import `library` (never "." , the package's own modules)."""
    return library in ALLOWED_IMPORTS or _is_stdlib(library)


@functools.lru_cache(maxsize=None)
def generate_module(module_name: str, class_name: str) -> str:
    """The source of one self-contained module defining `class_name` of `module_name` (a module of this package),
    with everything it needs from the package inlined. Raises if the class needs something a generated module cannot
    carry (a relative import inside a method, a name defined twice, a library other than `ALLOWED_IMPORTS`)."""
    needed: Dict[str, set] = {}  # module -> names of its definitions to keep
    owner: Dict[str, str] = {}  # definition name -> module it comes from
    imports: Dict[str, Tuple[str, Optional[str], Optional[str]]] = {}
    depends: Dict[str, set] = {}  # module -> modules it needs first
    work = [(module_name, class_name, module_name)]
    while work:
        name_in, name, user = work.pop()
        module = _module(name_in)
        if name in module.definitions:
            if name_in != user:
                depends.setdefault(user, set()).add(name_in)
            if owner.setdefault(name, name_in) != name_in:
                raise ValueError(f"`{name}` is defined in both {owner[name]} and {name_in}; rename one of them.")
            if name in needed.setdefault(name_in, set()):
                continue
            needed[name_in].add(name)
            kept = module.kept_nodes(module.definitions[name])
            for statement in _local_imports(kept):
                if not all(_allowed(library) for library in _libraries(statement)):
                    raise ValueError(
                        f"`{name}` in {module.display_path()} runs `{ast.unparse(statement)}` inside a function: a "
                        f"generated module imports only {', '.join(ALLOWED_IMPORTS)} and the standard library. Mark "
                        "the method @package_only or @needs_package, or import at the top of the module."
                    )
            for node in kept:
                for ref in ast.walk(node):
                    if isinstance(ref, ast.Name):
                        work.append((name_in, ref.id, name_in))
        elif name in module.relative:
            target, original = module.relative[name]
            work.append((target, original, user))
        elif name in module.imports:
            spec = module.imports[name]
            if imports.setdefault(name, spec) != spec:
                raise ValueError(f"`{name}` is imported as both {imports[name]} and {spec}; use one spelling.")
            if not _allowed(spec[0].split(".")[0]):
                raise ValueError(
                    f"`{class_name}` needs `{name}` from {spec[0]} (via {module.display_path()}); generated modules "
                    f"import only {', '.join(ALLOWED_IMPORTS)} and the standard library."
                )
        # Anything else is a builtin, a local variable or a parameter: nothing to collect.
    clashes = sorted(set(owner) & set(imports))
    if clashes:
        raise ValueError(f"{clashes} are both defined in the package and imported; rename them.")

    order: List[str] = []

    def visit(name: str, path: Tuple[str, ...] = ()):
        if name in path:
            raise ValueError(f"The modules {' -> '.join(path + (name,))} need each other; break the cycle.")
        if name not in order:
            for dependency in sorted(depends.get(name, ())):
                visit(dependency, path + (name,))
            order.append(name)

    visit(module_name)
    body, previous = "", None
    for name in order:
        module, previous = _module(name), None
        nodes = sorted((module.definitions[n] for n in needed[name]), key=lambda node: node.lineno)
        for node in {id(node): node for node in nodes}.values():  # `a = b = ...` binds two names
            # Constants that follow each other in the source stay together; definitions are two lines apart.
            together = previous is not None and module.first_line(node) == previous.end_lineno + 1
            body += ("\n" if together else "\n\n\n") if body else ""
            body += module.text(node, class_name)
            previous = node if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
    body += "\n"
    first = next(line for line in body.splitlines() if not line.startswith("#"))
    # isort's spacing after the imports: two blank lines before a definition, one before anything else.
    gap = "\n\n" if first.startswith(("def ", "class ", "async def ", "@")) else "\n"
    return _header(class_name, [_module(name).display_path() for name in order], imports) + gap + body


def _header(class_name: str, sources: List[str], imports) -> str:
    from . import __version__

    libraries = sorted({spec[0].split(".")[0] for spec in imports.values()} & set(ALLOWED_IMPORTS))
    helpers = f" (with what it needs from {', '.join(sources[:-1])})" if len(sources) > 1 else ""
    text = (
        f"Generated by ddpm-kiit {__version__} from {sources[-1]}{helpers}. Do not edit: saving the pipeline with "
        "ddpm-kiit writes this file again. Licensed under the Apache License, Version 2.0.\n"
        f"`{class_name}` for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` without ddpm-kiit "
        "installed. With ddpm-kiit installed and imported, Diffusers uses the package's own class and never runs this "
        f"file. It imports only {', '.join(libraries)} and the standard library"
        + (" (NumPy is a dependency of Diffusers)." if "numpy" in libraries else ".")
    )
    paragraphs = [textwrap.wrap(paragraph, 117, break_on_hyphens=False) for paragraph in text.split("\n")]
    comment = "\n#\n".join("\n".join(f"# {line}" for line in lines) for lines in paragraphs)
    docstring = f'"""{class_name}, generated from ddpm-kiit {__version__}: see the comment above."""'
    return comment + "\n" + docstring + "\n\n" + _import_block(imports) + "\n"


def _name_order(name: str):
    """isort's (and ruff's) order of imported names: constants, then classes, then the rest."""
    bare = name.split(" as ")[0]
    kind = 0 if bare.isupper() and len(bare) > 1 else 1 if bare[:1].isupper() else 2
    return kind, bare.lower(), bare


def _import_block(imports) -> str:
    plain, grouped = set(), {}
    for module, name, asname in imports.values():
        if name is None:
            plain.add((module, f"import {module}" + (f" as {asname}" if asname else "")))
        else:
            grouped.setdefault(module, set()).add(name + (f" as {asname}" if asname else ""))
    sections = []
    for stdlib in (True, False):
        straight = sorted(line for module, line in plain if _is_stdlib(module) == stdlib)
        froms = [
            f"from {module} import {', '.join(sorted(names, key=_name_order))}"
            for module, names in sorted(grouped.items())
            if _is_stdlib(module) == stdlib
        ]
        if straight or froms:
            sections.append("\n".join(straight + froms))
    return "\n\n".join(sections)


def _package_class(obj) -> Optional[type]:
    """`type(obj)` when it is one of the package's classes that have a generated module, else None."""
    cls = type(obj)
    package = sys.modules.get(PACKAGE)
    if cls.__name__ in REMOTE_MODULES and package is not None and getattr(package, cls.__name__, None) is cls:
        return cls
    return None


def code_files(pipe) -> Dict[str, type]:
    """The generated module files a saved `pipe` carries, by path in the folder (`/`-separated), and their classes:
    the pipeline's at the root, and one in each component folder whose component is one of ours (a stock Diffusers
    scheduler swapped in needs no code)."""
    files = {}
    cls = _package_class(pipe)
    if cls is not None:
        files[f"{REMOTE_MODULES[cls.__name__]}.py"] = cls
    for name, component in pipe.components.items():
        cls = _package_class(component)
        if cls is not None:
            files[f"{name}/{REMOTE_MODULES[cls.__name__]}.py"] = cls
    return files


def write_remote_code(pipe, save_directory: os.PathLike) -> List[Path]:
    """Writes the generated modules of `pipe` (see `code_files`) into a folder that `save_pretrained` just wrote, and
    names them in its `model_index.json` in Diffusers' remote-code form. Returns the paths written."""
    folder = Path(save_directory)
    index_path = folder / MODEL_INDEX
    index = json.loads(index_path.read_text(encoding="utf-8"))
    written = []
    for relative, cls in code_files(pipe).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_module(cls.__module__, cls.__name__), encoding="utf-8")
        written.append(path)
        entry = [REMOTE_MODULES[cls.__name__], cls.__name__]
        if "/" in relative:
            index[relative.split("/")[0]] = entry
        else:
            index["_class_name"] = entry
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written


def is_generated_entry(entry) -> bool:
    """Whether a `model_index.json` entry (`_class_name` or a component) names a module that ddpm-kiit generates or
    once generated (`LEGACY_REMOTE_MODULES`)."""
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
        return False
    return entry[0] in (REMOTE_MODULES.get(entry[1]), LEGACY_REMOTE_MODULES.get(entry[1]))


def pipeline_class_name(index: Dict) -> Optional[str]:
    """The pipeline class a `model_index.json` names, in either form: `"KiitDDPMPipeline"` (folders saved before
    issue 23) or `["pipeline_kiit_ddpm", "KiitDDPMPipeline"]`."""
    name = index.get("_class_name")
    if isinstance(name, (list, tuple)):
        return name[1] if len(name) == 2 and isinstance(name[1], str) else None
    return name if isinstance(name, str) else None


def remote_code_paths(index: Dict) -> List[str]:
    """The module files of ours that a `model_index.json` names (`/`-separated, relative to its folder)."""
    paths = []
    for key, entry in index.items():
        if is_generated_entry(entry):
            paths.append(f"{entry[0]}.py" if key == "_class_name" else f"{key}/{entry[0]}.py")
    return paths


def refresh_saved_folder(folder: os.PathLike) -> List[Path]:
    """Brings a folder that `save_pretrained` wrote (an older ddpm-kiit's included) to the current layout without
    touching its weights: writes the generated modules, names them in `model_index.json` and renews the card's Usage
    section (the rest of the card stays). This is how the shipped pipelines moved to the layout of issue 23, and how
    they follow a change of the package's source:

        from ddpm_kiit.pretrained import shipped_pipelines
        from ddpm_kiit.remote_code import refresh_saved_folder

        for folder in shipped_pipelines().values():
            refresh_saved_folder(folder)
    """
    from .hub import update_card_usage
    from .pipelines import KiitDDPMPipeline

    pipe = KiitDDPMPipeline.from_pretrained(folder)
    written = write_remote_code(pipe, folder)
    if (Path(folder) / "README.md").is_file():
        update_card_usage(folder, pipe)
    return written
