/* ROMix (scrypt N=1024, r=1) of one hash, with SIMD inside the hash.
 *
 * Included by scrypt.c once per instruction set, with FUNC (the function
 * name), ATTRS (target attributes) and XOR_ROTL(x, v, s) (x xor the 32-bit
 * words of v each rotated left by s, all __m128i) defined.
 *
 * salsa20/8's 4x4 state
 *
 *      0  1  2  3
 *      4  5  6  7
 *      8  9 10 11
 *     12 13 14 15
 *
 * is held as four rows along its diagonals,
 *
 *     a = ( 0  5 10 15)   b = ( 4  9 14  3)
 *     c = ( 8 13  2  7)   d = (12  1  6 11)
 *
 * so that the four column quarter-rounds are one another's lanes: each of
 * their steps is one vector add, rotate and xor. Turning b, c and d by one,
 * two and three lanes lines the rows up the same way for the row half of
 * the double round, and turning them back restores the diagonals. Each
 * 64-byte block is put in this order once when ROMix starts and taken out
 * of it when it ends; xor and add work word by word, so everything between
 * (the scratch V included) stays in it. Word 0 of a block is lane 0 of its
 * a in both orders, so j is still word 16 of the state.
 *
 * The steps of a quarter-round depend on one another, so a hash is still one
 * chain of dependent steps, four add-rotate-xors long per half round: this
 * kernel is as fast as that chain's latency, where the scalar one is held
 * back by the number of instructions a core can issue for the four
 * quarter-rounds side by side.
 */

/* Word 4r + i of a block in diagonal order is word (4r + 5i) mod 16 of it. */
#define DIAGONAL(p) ((4 * ((p) >> 2) + 5 * ((p) & 3)) & 15)

ATTRS static inline __attribute__((always_inline)) void
CAT(salsa8_, FUNC)(__m128i b[4], const __m128i bx[4])
{
    __m128i a, bb, c, d;
    a = b[0] = _mm_xor_si128(b[0], bx[0]);
    bb = b[1] = _mm_xor_si128(b[1], bx[1]);
    c = b[2] = _mm_xor_si128(b[2], bx[2]);
    d = b[3] = _mm_xor_si128(b[3], bx[3]);
#pragma GCC unroll 4
    for (int round = 0; round < 8; round += 2) {
        /* columns: (0 4 8 12) (5 9 13 1) (10 14 2 6) (15 3 7 11) */
        bb = XOR_ROTL(bb, _mm_add_epi32(a, d), 7);
        c = XOR_ROTL(c, _mm_add_epi32(bb, a), 9);
        d = XOR_ROTL(d, _mm_add_epi32(c, bb), 13);
        a = XOR_ROTL(a, _mm_add_epi32(d, c), 18);
        /* b = (3 4 9 14), c = (2 7 8 13), d = (1 6 11 12) */
        bb = _mm_shuffle_epi32(bb, 0x93);
        c = _mm_shuffle_epi32(c, 0x4e);
        d = _mm_shuffle_epi32(d, 0x39);
        /* rows: (0 1 2 3) (5 6 7 4) (10 11 8 9) (15 12 13 14) */
        d = XOR_ROTL(d, _mm_add_epi32(a, bb), 7);
        c = XOR_ROTL(c, _mm_add_epi32(d, a), 9);
        bb = XOR_ROTL(bb, _mm_add_epi32(c, d), 13);
        a = XOR_ROTL(a, _mm_add_epi32(bb, c), 18);
        /* back to the diagonals */
        bb = _mm_shuffle_epi32(bb, 0x39);
        c = _mm_shuffle_epi32(c, 0x4e);
        d = _mm_shuffle_epi32(d, 0x93);
    }
    b[0] = _mm_add_epi32(b[0], a);
    b[1] = _mm_add_epi32(b[1], bb);
    b[2] = _mm_add_epi32(b[2], c);
    b[3] = _mm_add_epi32(b[3], d);
}

/* X is the hash's 32 words; V has room for 1024 * 32 words (64-byte aligned)
 * and holds each entry in diagonal order. */
ATTRS static void FUNC(uint32_t *restrict X, uint32_t *restrict V)
{
    uint32_t w[32] __attribute__((aligned(16)));
    __m128i x[8];
    __m128i *restrict v = (__m128i *)V;

    for (int p = 0; p < 16; p++) {
        w[p] = X[DIAGONAL(p)];
        w[16 + p] = X[16 + DIAGONAL(p)];
    }
    for (int k = 0; k < 8; k++)
        x[k] = _mm_load_si128((const __m128i *)&w[4 * k]);
    for (int i = 0; i < 1024; i++) {
        for (int k = 0; k < 8; k++)
            _mm_store_si128(&v[8 * i + k], x[k]);
        CAT(salsa8_, FUNC)(&x[0], &x[4]);
        CAT(salsa8_, FUNC)(&x[4], &x[0]);
    }
    for (int i = 0; i < 1024; i++) {
        const __m128i *e = &v[8 * (size_t)((uint32_t)_mm_cvtsi128_si32(x[4]) & 1023)];
        for (int k = 0; k < 8; k++)
            x[k] = _mm_xor_si128(x[k], _mm_load_si128(&e[k]));
        CAT(salsa8_, FUNC)(&x[0], &x[4]);
        CAT(salsa8_, FUNC)(&x[4], &x[0]);
    }
    for (int k = 0; k < 8; k++)
        _mm_store_si128((__m128i *)&w[4 * k], x[k]);
    for (int p = 0; p < 16; p++) {
        X[DIAGONAL(p)] = w[p];
        X[16 + DIAGONAL(p)] = w[16 + p];
    }
}

#undef DIAGONAL
