"""Loaded at start-up by every Python process of a fault test (the test puts this folder
on PYTHONPATH, which Ray's workers inherit). ``PIPELINE_FAULT=<module>:<function>:<what>``
wraps one function of the project: ``slow=S`` sleeps S seconds before each call (so the
test can kill the worker while the task runs), ``fail`` raises an OSError every time,
``fail_once=PATH`` wraps a generator function so that its first call in any process
(the one that creates PATH) raises an OSError after its first item: a transient read
error in the middle of a file."""

import os

_SPEC = os.environ.get("PIPELINE_FAULT")

if _SPEC:
    import functools
    import importlib.abc
    import importlib.machinery
    import sys
    import time

    _MODULE, _FUNCTION, _WHAT = _SPEC.split(":")

    def _fail_once(fn, marker):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            items = fn(*args, **kwargs)
            yield next(items)
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                yield from items
                return
            raise OSError(f"injected transient read error in {_FUNCTION}")

        return wrapped

    def _wrap(fn):
        if _WHAT.startswith("fail_once="):
            return _fail_once(fn, _WHAT.split("=", 1)[1])

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
