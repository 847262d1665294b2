"""Loaded at start-up by every Python process of a fault test (the test puts this folder
on PYTHONPATH, which Ray's workers inherit). ``PIPELINE_FAULT=<module>:<function>:<what>``
wraps one function of the project: ``slow=S`` sleeps S seconds before each call (so the
test can kill the worker while the task runs), ``fail`` raises an OSError every time."""

import os

_SPEC = os.environ.get("PIPELINE_FAULT")

if _SPEC:
    import functools
    import importlib.abc
    import importlib.machinery
    import sys
    import time

    _MODULE, _FUNCTION, _WHAT = _SPEC.split(":")

    def _wrap(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            if _WHAT == "fail":
                raise OSError(f"injected I/O error in {_FUNCTION}")
            time.sleep(float(_WHAT.split("=")[1]))
            return fn(*args, **kwargs)

        return wrapped

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != _MODULE:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                setattr(module, _FUNCTION, _wrap(getattr(module, _FUNCTION)))

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())
