"""The Ethereum family (ethash, etchash): work from the node, the three
protocols miners speak (HTTP getwork, eth-proxy stratum, NiceHash
EthereumStratum/1.0.0), share rules for the share pipeline, and blocks
submitted with ``eth_submitWork``."""
