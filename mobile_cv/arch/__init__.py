"""The model layer: arch defs (parsing, the registry of names), ops and blocks, the builder,
FLOPs/params counting, BatchNorm folding, loading weights. Nothing here knows of search,
training or latency; the public names are importable from :mod:`mobile_cv` itself."""
