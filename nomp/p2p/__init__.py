"""New blocks heard of on the coin daemon's P2P port (the pool as a peer).

``wire`` encodes and decodes messages, ``session`` is one connection's
handshake and reactions as a pure state machine, ``protocol`` frames bytes
for it, and ``service`` connects, reconnects and tells the pool.
"""
