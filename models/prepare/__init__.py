"""Preparation recipes: packaged weights in, ONNX graphs and a tokenizer out.

Each module here is a recipe that the catalog (``models/catalog.py``) points at; the store
(``models/store/``) runs it into a temporary folder and renames the result into place.
Importing these modules is cheap: torch, transformers and onnx are imported inside the functions
that need them, so the runtime never loads them (they are the ``prepare`` extra).
"""
