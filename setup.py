"""Only here because cffi_modules cannot be declared in setup.cfg or pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["nomp/hashing/_build.py:ffibuilder"])
