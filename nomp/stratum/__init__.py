"""Stratum v1: the miners' side of the pool."""
