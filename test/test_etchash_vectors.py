"""Etchash after ECIP-1099's activation, against answers computed with an
independent implementation (@ethereumjs/ethash, composed with the seed of
epoch 2E and the sizes of epoch E): see test/vectors/etchash.mjs for the
command that made test/vectors/etchash.json."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from nomp.hashing.ethash import EthashCache, cache_size, dataset_size, epochs_for, seed_hash

VECTORS = json.loads((Path(__file__).parent / "vectors" / "etchash.json").read_text())


class EtchashVectorTests(SynchronousTestCase):
    def test_vectors(self) -> None:
        self.assertEqual({case["chain"] for case in VECTORS}, {"mordor", "classic"})
        for case in VECTORS:
            epochs = epochs_for(case["block"], case["activation"])
            self.assertEqual(epochs, (case["seed_epoch"], case["size_epoch"]), case["chain"])
            self.assertEqual(seed_hash(epochs[0]).hex(), case["seed"])
            self.assertEqual(
                (cache_size(epochs[1]), dataset_size(epochs[1])), (case["cache_size"], case["dataset_size"])
            )
            cache = EthashCache.build(*epochs)
            for vector in case["hashes"]:
                result = cache.hash(bytes.fromhex(vector["header"]), int(vector["nonce"], 16))
                self.assertEqual(
                    result.mix_digest.hex(), vector["mix_digest"], (case["chain"], vector["nonce"])
                )
                self.assertEqual(
                    result.final_hash.hex(), vector["final_hash"], (case["chain"], vector["nonce"])
                )
