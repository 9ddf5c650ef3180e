"""The one thing pyproject.toml cannot declare stably: the C extension exporter._tally (the JSON
fast path's per-line loop; why it is C is said at the top of exporter/_tally.c). It is optional:
without a C compiler (or Python's headers) the build warns and goes on, and the exporter runs
the same loop in pure Python (exporter/tally.py), with the same metrics, more slowly. `make
setup` installs a compiler and the headers on Debian."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("exporter._tally", ["exporter/_tally.c"], optional=True)])
