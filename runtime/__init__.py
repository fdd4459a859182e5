"""The ONNX Runtime layer: sessions, execution providers, KV cache and the generation loop.

This package is the only one that imports onnxruntime (docs/architecture.md, the layers).
"""
