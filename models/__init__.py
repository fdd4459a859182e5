"""Model types: the catalog of models, their preparation from packaged weights, and pipelines."""
