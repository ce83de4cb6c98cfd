"""The key classes under their old module name, for the modules not yet importing nomp.store.schema."""

from nomp.store.schema import InstanceKeys, PoolKeys, WebKeys

__all__ = ["InstanceKeys", "PoolKeys", "WebKeys"]
