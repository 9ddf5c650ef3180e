"""The one thing pyproject.toml cannot declare stably: the C extension exporter._tally (the JSON
fast path's per-line loop; why it is C is said at the top of exporter/_tally.c). Installing from
source needs a C compiler and Python's headers: `make setup` installs them on Debian."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("exporter._tally", ["exporter/_tally.c"])])
