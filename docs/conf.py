"""Sphinx configuration of fastdrop's documentation: a user guide (guide/) and an API reference
(api/) generated from the docstrings, which are written in the numpydoc format.

The reference imports the installed fastdrop and its adapters, which import PyTorch, JAX, Flax
and Keras, so build from an environment that has them and the docs extra (as .ci/run does):

    pip install -c constraints/test.txt ".[docs,torch,jax,flax,keras]"
    sphinx-build -W --keep-going -b html docs build/docs-html

Run it through the sphinx-build command, not ``python -m sphinx`` from the repository root: the
latter puts the root on sys.path, where the source directory fastdrop/ (without its compiled
core) would shadow the installed package.
"""
import os

import fastdrop

# fastdrop.keras's page imports Keras, whose backend is fixed at import: one fastdrop serves,
# unless the builder chose one.
os.environ.setdefault("KERAS_BACKEND", "jax")

project = "fastdrop"
author = "The fastdrop developers"
project_copyright = "the fastdrop developers, BSD-3-Clause"
version = release = fastdrop.__version__

extensions = ["sphinx.ext.autodoc", "numpydoc"]

# Single back-quotes in docstrings name Python objects (`dropout`, `Stream`), as in NumPy's docs.
default_role = "py:obj"
autodoc_member_order = "bysource"
# The torch modules subclass torch.nn.Dropout and friends: numpydoc's generated tables of
# members would list every inherited nn.Module method.  Each page lists what it documents.
numpydoc_show_class_members = False

html_theme = "alabaster"
html_title = f"fastdrop {release}"
