"""The one-lane scrypt kernels of each instruction set agree with hashlib."""

from __future__ import annotations

import hashlib
import platform
import random

from twisted.trial.unittest import SynchronousTestCase

from nomp.hashing import scrypt
from nomp.hashing._native import ffi, lib

ISAS = ("portable", "sse2", "avx2", "avx512f", "avx512vl")

# The one-lane kernel each instruction set builds: its vectors work within
# the hash, so the wider sets have nothing to add until AVX-512VL.
SINGLE_KERNEL = {
    "portable": "portable",
    "sse2": "sse2",
    "avx2": "sse2",
    "avx512f": "sse2",
    "avx512vl": "avx512vl",
}


def reference_scrypt(header: bytes) -> bytes:
    return hashlib.scrypt(header, salt=header, n=1024, r=1, p=1, dklen=32)


def kernels() -> dict[int, str]:
    """The kernel names by lane count, as ``nomp_scrypt_kernels`` gives them."""
    names = ffi.string(lib.nomp_scrypt_kernels()).decode()
    return {int(lanes): name for lanes, name in (part.split(":") for part in names.split())}


class SingleHashKernelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.addCleanup(lib.nomp_scrypt_use_kernels, ffi.NULL)
        self.addCleanup(lib.nomp_scrypt_set_lanes, 0)
        self.isas = [isa for isa in ISAS if lib.nomp_scrypt_use_kernels(isa.encode()) == 0]
        lib.nomp_scrypt_use_kernels(ffi.NULL)

    def test_instruction_sets(self) -> None:
        """The portable kernels are always there, and on x86-64 at least SSE2's."""
        self.assertIn("portable", self.isas)
        if platform.machine() in ("x86_64", "AMD64"):
            self.assertIn("sse2", self.isas)

    def test_each_single_hash_kernel(self) -> None:
        """Under each instruction set the CPU runs, the one-lane kernel is the
        one it should build and gives hashlib's answer for 200 headers, one
        call each."""
        rng = random.Random(11)
        headers = [rng.randbytes(80) for _ in range(200)]
        expected = [reference_scrypt(h) for h in headers]
        ran = set()
        for isa in self.isas:
            self.assertEqual(lib.nomp_scrypt_use_kernels(isa.encode()), 0)
            self.assertEqual(kernels()[1], SINGLE_KERNEL[isa], isa)
            ran.add(kernels()[1])
            self.assertEqual(lib.nomp_scrypt_set_lanes(1), 0)
            self.assertEqual([scrypt([h])[0] for h in headers], expected, isa)
            self.assertEqual(scrypt(headers), expected, isa)
            lib.nomp_scrypt_set_lanes(0)
        self.assertEqual(ran, {SINGLE_KERNEL[isa] for isa in self.isas})

    def test_best_single_hash_kernel(self) -> None:
        """By default the one-lane kernel is that of the CPU's best instructions."""
        self.assertEqual(kernels()[1], SINGLE_KERNEL[self.isas[-1]])

    def test_batches_under_each_isa(self) -> None:
        """Batches of every size from 1 to 17, kernels chosen by batch size,
        agree with hashlib under each instruction set the CPU runs."""
        rng = random.Random(12)
        headers = [rng.randbytes(80) for _ in range(17)]
        expected = [reference_scrypt(h) for h in headers]
        for isa in self.isas:
            self.assertEqual(lib.nomp_scrypt_use_kernels(isa.encode()), 0)
            for size in range(1, 18):
                self.assertEqual(scrypt(headers[:size]), expected[:size], (isa, size))
