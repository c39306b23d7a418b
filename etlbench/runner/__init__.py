"""The benchmark runner: ``execute`` runs an experiment on Ray into the results database of
:mod:`etlbench.results`.

(Submodules are imported explicitly, so that the ``etlbench`` command does not import Ray unless it runs.)
"""
