"""The command-line tools. From a clone: ``python tools/search.py ...``; installed (``pip install .``),
the same ``main`` functions are the commands ``fbnet-search``, ``fbnet-train``, ``fbnet-eval``,
``fbnet-export``, ``fbnet-latency-table``, ``fbnet-zoo``, ``fbnet-flops``, ``fbnet-space-size`` and
``fbnet-derive``
(this folder is installed as the package ``mobile_cv.tools``)."""
