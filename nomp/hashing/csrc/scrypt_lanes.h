/* ROMix (scrypt N=1024, r=1) over LANES independent hashes at once.
 *
 * Included by scrypt.c once per lane count, with LANES, VEC (a GCC vector
 * type of LANES 32-bit words), FUNC (the function name) and ATTRS (target
 * attributes) defined. State is word-major and lane-minor: x[word] is a
 * vector holding that word of every hash, so each salsa20/8 step is one
 * vector operation for all lanes. A single scrypt hash is a chain of 131072
 * dependent add-rotate-xor steps; running independent hashes side by side
 * is the only way to keep the vector units busy. */

#define ROTL32(v, s) (((v) << (s)) | ((v) >> (32 - (s))))
#define STEP(t, a, b, s) x[t] ^= ROTL32(x[a] + x[b], s)

static inline __attribute__((always_inline)) void
CAT(salsa8_, FUNC)(VEC b[16], const VEC bx[16])
{
    VEC x[16];
    for (int k = 0; k < 16; k++)
        x[k] = b[k] ^= bx[k];
#pragma GCC unroll 4
    for (int round = 0; round < 8; round += 2) {
        /* columns */
        STEP(4, 0, 12, 7);  STEP(9, 5, 1, 7);   STEP(14, 10, 6, 7);  STEP(3, 15, 11, 7);
        STEP(8, 4, 0, 9);   STEP(13, 9, 5, 9);  STEP(2, 14, 10, 9);  STEP(7, 3, 15, 9);
        STEP(12, 8, 4, 13); STEP(1, 13, 9, 13); STEP(6, 2, 14, 13);  STEP(11, 7, 3, 13);
        STEP(0, 12, 8, 18); STEP(5, 1, 13, 18); STEP(10, 6, 2, 18);  STEP(15, 11, 7, 18);
        /* rows */
        STEP(1, 0, 3, 7);   STEP(6, 5, 4, 7);   STEP(11, 10, 9, 7);  STEP(12, 15, 14, 7);
        STEP(2, 1, 0, 9);   STEP(7, 6, 5, 9);   STEP(8, 11, 10, 9);  STEP(13, 12, 15, 9);
        STEP(3, 2, 1, 13);  STEP(4, 7, 6, 13);  STEP(9, 8, 11, 13);  STEP(14, 13, 12, 13);
        STEP(0, 3, 2, 18);  STEP(5, 4, 7, 18);  STEP(10, 9, 8, 18);  STEP(15, 14, 13, 18);
    }
    for (int k = 0; k < 16; k++)
        b[k] += x[k];
}

/* X is the 32 words of every lane; V has room for 1024 * 32 * LANES words.
 * STORE_V(x, V, i) saves the state as entry i, XOR_V(x, V) xors in the
 * entry each lane's own j selects: how they lay out V is theirs to choose. */
ATTRS static void FUNC(uint32_t *restrict X, uint32_t *restrict V)
{
    VEC x[32];
    memcpy(x, X, sizeof x);
    for (int i = 0; i < 1024; i++) {
        STORE_V(x, V, i);
        CAT(salsa8_, FUNC)(&x[0], &x[16]);
        CAT(salsa8_, FUNC)(&x[16], &x[0]);
    }
    for (int i = 0; i < 1024; i++) {
        XOR_V(x, V);
        CAT(salsa8_, FUNC)(&x[0], &x[16]);
        CAT(salsa8_, FUNC)(&x[16], &x[0]);
    }
    memcpy(X, x, sizeof x);
}

#undef STEP
#undef ROTL32
