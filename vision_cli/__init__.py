"""The ``vision`` command: the top of the layering, the one package that imports every layer.

One module per command group (``data``, ``train``, ``evaluate``, ``bench``, ``serve``,
``promote``) and one for orchestration (``orchestrate``: the main job, running suites,
training a suite's recipe). Nothing imports this package.
"""
