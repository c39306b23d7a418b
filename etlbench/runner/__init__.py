"""The benchmark runner: ``execute`` runs an experiment on Ray, ``store`` is its results database.

(Submodules are imported explicitly, so that the ``etlbench`` command does not import Ray unless it runs.)
"""
