"""Sphinx configuration of the rdnas documentation.

Build it strictly, as CI does (warnings are errors, every cross-reference checked)::

    ./install.sh docs
    sphinx-build -W --keep-going -n -b html docs docs/_build/html

Why Sphinx: it is what PyTorch and its ecosystem (torchvision, torchaudio, NNI) build their documentation with;
autodoc reads the API reference from the docstrings themselves (Google style, through napoleon), so a renamed or
removed function breaks the build instead of leaving a stale page, and intersphinx links torch's types to
torch's own pages. MyST lets the pages be Markdown, so they read the same on GitHub as on the built site.

The package is imported, not read as text: build with rdnas installed (``./install.sh docs``) or with the
checkout on the path after an in-place build (``PYTHONPATH=. sphinx-build ...``).
"""

import importlib
import inspect
import os
import pkgutil
import re
from pathlib import Path

import rdnas

project = "rdnas"
author = "the rdnas developers"
copyright = "the rdnas developers"
release = rdnas.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # links to headings (#several-processes) as on GitHub

# API reference: every public name with its docstring. The pages under api/ are written at each build by
# write_api_pages below (not committed), so a new module or public name joins the reference by itself.
autosummary_generate = False
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # a class's "Attributes:" as fields: dataclass fields are documented once

# Links to torch's and Python's pages. The inventories are fetched over the network, which CI does not have, so
# they are used only when RDNAS_DOCS_INTERSPHINX=1 (a machine with the internet); offline builds leave such names
# as plain text (nitpick_ignore_regex below).
intersphinx_mapping = {}
if os.environ.get("RDNAS_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "numpy": ("https://numpy.org/doc/stable", None),
    }

# Nitpicky (-n): every cross-reference must resolve. The docstrings write shapes in their types, e.g.
# ``Tensor[K, space.width]`` or ``LongTensor[N]``, and name torch, numpy and Python types that an offline build has
# no inventory for; those targets are ignored. Every reference to an rdnas name is still checked.
nitpick_ignore_regex = [
    (r"py:.*", r"(?!rdnas\.).*"),
]

suppress_warnings = []

html_theme = "furo"
html_title = f"rdnas {release}"
html_static_path = []


# --- the API pages -------------------------------------------------------------------------------------------------

API_DIR = Path(__file__).parent / "api"
SKIPPED_PACKAGES = ("rdnas.cli",)  # the commands are documented in the guides, from their --help


def public_modules() -> list[str]:
    """Every module of rdnas whose dotted name has no part starting with an underscore, packages first."""
    names = ["rdnas"]
    for info in pkgutil.walk_packages(rdnas.__path__, "rdnas."):
        if any(part.startswith("_") for part in info.name.split(".")) or info.name.startswith(SKIPPED_PACKAGES):
            continue
        names.append(info.name)
    return sorted(names, key=lambda name: (name.count("."), name))


def public_names(module) -> list[str]:
    """A package's or module's public names: its __all__, else what it defines without a leading underscore."""
    if hasattr(module, "__all__"):
        return [name for name in module.__all__ if not name.startswith("__")]
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        defined_here = getattr(value, "__module__", None) == module.__name__
        if defined_here and (inspect.isclass(value) or inspect.isfunction(value)):
            names.append(name)
        elif not callable(value) and name.isupper():  # module constants
            names.append(name)
    return names


def api_pages() -> dict[str, list[tuple[str, object]]]:
    """{module: [(name, object)]}: each public object once, on the page of the outermost module exporting it."""
    pages, seen = {}, set()
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        parent, _, last = module_name.rpartition(".")
        if parent and getattr(importlib.import_module(parent), last, module) is not module:
            continue  # rdnas.ops.margin_rank_loss: the package exports the function of that name, not the module
        entries = []
        for name in public_names(module):
            value = getattr(module, name)
            if inspect.ismodule(value):
                continue
            key = id(value) if (inspect.isclass(value) or callable(value)) else (module_name, name)
            if key in seen:
                continue
            seen.add(key)
            entries.append((name, value))
        if entries or module.__doc__:
            pages[module_name] = entries
    return pages


def _directive(module_name: str, name: str, value) -> str:
    target = f"{module_name}.{name}"
    if inspect.isclass(value):
        kind = "exception" if issubclass(value, BaseException) else "class"
        return f".. auto{kind}:: {target}\n   :members:\n   :undoc-members:\n   :show-inheritance:\n"
    if callable(value):
        return f".. autofunction:: {target}\n"
    # a constant without a docstring: autodata would show its type's docstring (dict's, list's)
    value_line = f"   :value: {value!r}\n" if len(repr(value)) <= 100 else ""
    return f".. py:data:: {target}\n{value_line}"


def write_api_pages(app) -> None:
    """Writes api/<module>.rst for every module that has public names or a docstring (the build's first step)."""
    API_DIR.mkdir(exist_ok=True)
    wanted = set()
    for module_name, entries in api_pages().items():
        lines = [module_name, "=" * len(module_name), "", f".. automodule:: {module_name}", "   :no-members:", ""]
        if entries:
            lines += [".. rubric:: Public names", "", ".. autosummary::", "   :nosignatures:", ""]
            lines += [f"   {name}" for name, _ in entries] + ["", ".. rubric:: Reference", ""]
            lines += [_directive(module_name, name, value) for name, value in entries]
        page, text = API_DIR / f"{module_name}.rst", "\n".join(lines) + "\n"
        wanted.add(page.name)
        if not page.exists() or page.read_text() != text:  # unchanged pages keep their time: incremental builds
            page.write_text(text)
    for page in API_DIR.glob("*.rst"):
        if page.name not in wanted:  # a module that was removed or renamed
            page.unlink()


# --- docstrings: plain-text maths ----------------------------------------------------------------------------------

_LITERAL = re.compile(r"(``.*?``)")


_MARKUP = re.compile(r"(?<!\\)[|*]")


def _escaped(text: str) -> str:
    bullet = re.match(r"\s*\* ", text)  # a "* item" list line keeps its bullet
    head, rest = (text[:bullet.end()], text[bullet.end():]) if bullet else ("", text)
    return head + _MARKUP.sub(lambda match: "\\" + match.group(0), rest)


def escape_plain_text(app, what, name, obj, options, lines) -> None:
    """The docstrings are plain text with maths: ``|w * g|``, ``Tensor[B, *]``, ``**options``. reStructuredText
    would read bars as substitutions and stars as emphasis, so outside inline literals both are escaped."""
    for i, line in enumerate(lines):
        if "|" in line or "*" in line:
            parts = _LITERAL.split(line)
            lines[i] = "".join(part if part.startswith("``") else _escaped(part) for part in parts)


# --- cross-references ----------------------------------------------------------------------------------------------


def _rdnas_name_exists(target: str) -> bool:
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attribute in parts[end:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def resolve_private_names(app, env, node, contnode):
    """A reference to an rdnas name that exists but has no page (a private module, a base class) renders as text;
    one to a name that does not exist (renamed, removed) stays unresolved, and the strict build fails on it."""
    target = node.get("reftarget", "")
    if node.get("refdomain") == "py" and target.startswith("rdnas.") and _rdnas_name_exists(target):
        return contnode
    return None


def setup(app):
    app.connect("builder-inited", write_api_pages)
    app.connect("autodoc-process-docstring", escape_plain_text, priority=600)
    app.connect("missing-reference", resolve_private_names, priority=900)
