"""The documentation against the package: the API reference in docs/ documents every public name
(CI builds the pages themselves with sphinx-build -W), what it shows, the docstrings, names no
file outside the repository, and the changelog has an entry for this version."""
import ast
import importlib
import inspect
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: An autodoc or plain object directive and the name it documents (modules are the pages' titles).
DIRECTIVE = re.compile(r"^\.\. (?:auto)?(?:function|class|data)::\s*(\S+)", re.M)
#: Files a user of the package does not have: the design notes beside a developer's clone.
OUTSIDE = ("SPEC", "shared/")


def documented(page: str):
    """The names a page of docs/api documents, without their module's prefix."""
    text = (DOCS / "api" / page).read_text()
    return {name.rpartition(".")[2] for name in DIRECTIVE.findall(text)}


#: The framework each adapter imports, and the extra that installs it.
FRAMEWORKS = {"fastdrop.torch": ("torch", "torch"), "fastdrop.jax": ("jax", "jax"),
              "fastdrop.flax.linen": ("flax", "flax"), "fastdrop.flax.nnx": ("flax", "flax")}


def public_module(name: str):
    if name in FRAMEWORKS:
        framework, extra = FRAMEWORKS[name]
        pytest.importorskip(framework,
                            reason=f'needs {framework}: pip install "fastdropout[{extra}]"')
    return importlib.import_module(name)


@pytest.mark.parametrize("module_name, page", [("fastdrop", "fastdrop.rst"),
                                               ("fastdrop.torch", "torch.rst"),
                                               ("fastdrop.jax", "jax.rst"),
                                               ("fastdrop.flax.linen", "flax.rst"),
                                               ("fastdrop.flax.nnx", "flax.rst")])
def test_the_api_reference_documents_every_public_name(module_name, page):
    """Each name of the module's __all__ has its entry, and no entry names something else."""
    module = public_module(module_name)
    names = documented(page) - {"__version__"}
    assert names == set(module.__all__)


def test_the_keras_page_documents_every_public_name():
    """As above for fastdrop.keras, whose names are read from its source: importing Keras here
    would fix this process's Keras backend."""
    tree = ast.parse((ROOT / "fastdrop" / "keras.py").read_text())
    public = next(ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign)
                  and any(getattr(target, "id", None) == "__all__" for target in node.targets))
    assert documented("keras.rst") == set(public)


def test_the_reference_module_is_documented_whole():
    text = (DOCS / "api" / "reference.rst").read_text()
    assert ".. automodule:: fastdrop.reference\n   :members:" in text


def docstrings(module):
    """The module's docstring and those of its public names and of their public members."""
    yield module.__name__, module.__doc__
    for name in module.__all__:
        thing = getattr(module, name)
        yield f"{module.__name__}.{name}", getattr(thing, "__doc__", None)
        if inspect.isclass(thing):
            for member_name, member in vars(thing).items():
                if not member_name.startswith("_"):
                    yield f"{module.__name__}.{name}.{member_name}", getattr(member, "__doc__",
                                                                             None)


@pytest.mark.parametrize("module_name", ["fastdrop", "fastdrop.reference", "fastdrop.torch",
                                         "fastdrop.explain", "fastdrop.jax",
                                         "fastdrop.flax.linen", "fastdrop.flax.nnx"])
def test_docstrings_name_no_file_outside_the_repository(module_name):
    module = public_module(module_name)
    found = [(where, outside) for where, doc in docstrings(module) for outside in OUTSIDE
             if doc and outside in doc]
    assert not found, found


def test_every_guide_page_is_in_the_guides_table_of_contents():
    """sphinx-build -W refuses a page outside every toctree; this says which, without Sphinx."""
    toctree = (DOCS / "guide" / "index.rst").read_text().split()
    pages = sorted(path.stem for path in (DOCS / "guide").glob("*.rst") if path.stem != "index")
    assert pages and all(page in toctree for page in pages), pages


def test_the_changelog_opens_with_this_versions_entry():
    fastdrop = public_module("fastdrop")
    releases = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert releases and releases[0] == fastdrop.__version__, releases
