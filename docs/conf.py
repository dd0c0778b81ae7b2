"""Sphinx configuration of crdetect's documentation (``sphinx-build -W -b html docs docs/_build/html``; the figures
come first from ``python docs/make_figures.py``)."""

import crdetect

project = "crdetect"
author = "the crdetect developers"
copyright = "2026, the crdetect developers"
release = version = crdetect.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "numpydoc"]
numpydoc_show_class_members = False  # the API page lists what it documents
numpydoc_class_members_toctree = False
autodoc_typehints = "none"  # the numpydoc sections give the types
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
