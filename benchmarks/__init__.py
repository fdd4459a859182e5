"""``imagine-edge bench``: latency and throughput per ModelType, in process and over HTTP.

``cli.py`` parses flags; ``scenarios.py`` holds one scenario per ModelType, written once against
the official client's API so the same code measures ``ImagineEdge()`` in process and
``ImagineEdge(base_url=...)`` over HTTP; ``stats.py`` summarises samples; ``report.py`` writes
the terminal table, the JSON file (schema: ``schema.json``) and the PNG chart. Peer comparisons
(``--compare``) live beside their scenario's model type in ``peers.py``.
"""
