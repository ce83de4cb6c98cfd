/* Keccak-f[1600] and the Keccak sponge with the original padding (0x01 ...
 * 0x80), as Ethereum uses it: not SHA-3, whose padding is 0x06. Written for
 * nomp from the Keccak reference (round constants from the rc(t) LFSR,
 * rotation offsets (t+1)(t+2)/2, lanes A[x][y] at st[x + 5y]).
 *
 * The permutation keeps its 25 lanes in local variables so the compiler
 * can hold as many as it can in registers; ethash calls it about four
 * times per cache item and twice per dataset item, so it is the cost of a
 * cache build. The fixed-length entry points below skip the byte-wise
 * absorbing of the general sponge for the inputs ethash hashes. */
#include <string.h>

#include "keccak.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "keccak.c reads lanes in the host's byte order: little-endian only"
#endif

static const uint64_t round_constants[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

static inline uint64_t rol64(uint64_t x, unsigned n)
{
    return (x << n) | (x >> (64 - n));
}

void keccakf1600(uint64_t st[25])
{
    uint64_t a00 = st[0];
    uint64_t a10 = st[1];
    uint64_t a20 = st[2];
    uint64_t a30 = st[3];
    uint64_t a40 = st[4];
    uint64_t a01 = st[5];
    uint64_t a11 = st[6];
    uint64_t a21 = st[7];
    uint64_t a31 = st[8];
    uint64_t a41 = st[9];
    uint64_t a02 = st[10];
    uint64_t a12 = st[11];
    uint64_t a22 = st[12];
    uint64_t a32 = st[13];
    uint64_t a42 = st[14];
    uint64_t a03 = st[15];
    uint64_t a13 = st[16];
    uint64_t a23 = st[17];
    uint64_t a33 = st[18];
    uint64_t a43 = st[19];
    uint64_t a04 = st[20];
    uint64_t a14 = st[21];
    uint64_t a24 = st[22];
    uint64_t a34 = st[23];
    uint64_t a44 = st[24];
    uint64_t b00, b10, b20, b30, b40, b01, b11, b21, b31, b41, b02, b12, b22, b32, b42;
    uint64_t b03, b13, b23, b33, b43, b04, b14, b24, b34, b44;
    uint64_t c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    for (int round = 0; round < 24; round++) {
        /* theta */
        c0 = a00 ^ a01 ^ a02 ^ a03 ^ a04;
        c1 = a10 ^ a11 ^ a12 ^ a13 ^ a14;
        c2 = a20 ^ a21 ^ a22 ^ a23 ^ a24;
        c3 = a30 ^ a31 ^ a32 ^ a33 ^ a34;
        c4 = a40 ^ a41 ^ a42 ^ a43 ^ a44;
        d0 = c4 ^ rol64(c1, 1);
        d1 = c0 ^ rol64(c2, 1);
        d2 = c1 ^ rol64(c3, 1);
        d3 = c2 ^ rol64(c4, 1);
        d4 = c3 ^ rol64(c0, 1);
        /* rho and pi: B[y][2x + 3y] = rot(A[x][y] ^ D[x], r[x][y]) */
        b00 = a00 ^ d0;
        b02 = rol64(a10 ^ d1, 1);
        b04 = rol64(a20 ^ d2, 62);
        b01 = rol64(a30 ^ d3, 28);
        b03 = rol64(a40 ^ d4, 27);
        b13 = rol64(a01 ^ d0, 36);
        b10 = rol64(a11 ^ d1, 44);
        b12 = rol64(a21 ^ d2, 6);
        b14 = rol64(a31 ^ d3, 55);
        b11 = rol64(a41 ^ d4, 20);
        b21 = rol64(a02 ^ d0, 3);
        b23 = rol64(a12 ^ d1, 10);
        b20 = rol64(a22 ^ d2, 43);
        b22 = rol64(a32 ^ d3, 25);
        b24 = rol64(a42 ^ d4, 39);
        b34 = rol64(a03 ^ d0, 41);
        b31 = rol64(a13 ^ d1, 45);
        b33 = rol64(a23 ^ d2, 15);
        b30 = rol64(a33 ^ d3, 21);
        b32 = rol64(a43 ^ d4, 8);
        b42 = rol64(a04 ^ d0, 18);
        b44 = rol64(a14 ^ d1, 2);
        b41 = rol64(a24 ^ d2, 61);
        b43 = rol64(a34 ^ d3, 56);
        b40 = rol64(a44 ^ d4, 14);
        /* chi */
        a00 = b00 ^ (~b10 & b20);
        a10 = b10 ^ (~b20 & b30);
        a20 = b20 ^ (~b30 & b40);
        a30 = b30 ^ (~b40 & b00);
        a40 = b40 ^ (~b00 & b10);
        a01 = b01 ^ (~b11 & b21);
        a11 = b11 ^ (~b21 & b31);
        a21 = b21 ^ (~b31 & b41);
        a31 = b31 ^ (~b41 & b01);
        a41 = b41 ^ (~b01 & b11);
        a02 = b02 ^ (~b12 & b22);
        a12 = b12 ^ (~b22 & b32);
        a22 = b22 ^ (~b32 & b42);
        a32 = b32 ^ (~b42 & b02);
        a42 = b42 ^ (~b02 & b12);
        a03 = b03 ^ (~b13 & b23);
        a13 = b13 ^ (~b23 & b33);
        a23 = b23 ^ (~b33 & b43);
        a33 = b33 ^ (~b43 & b03);
        a43 = b43 ^ (~b03 & b13);
        a04 = b04 ^ (~b14 & b24);
        a14 = b14 ^ (~b24 & b34);
        a24 = b24 ^ (~b34 & b44);
        a34 = b34 ^ (~b44 & b04);
        a44 = b44 ^ (~b04 & b14);
        /* iota */
        a00 ^= round_constants[round];
    }
    st[0] = a00;
    st[1] = a10;
    st[2] = a20;
    st[3] = a30;
    st[4] = a40;
    st[5] = a01;
    st[6] = a11;
    st[7] = a21;
    st[8] = a31;
    st[9] = a41;
    st[10] = a02;
    st[11] = a12;
    st[12] = a22;
    st[13] = a32;
    st[14] = a42;
    st[15] = a03;
    st[16] = a13;
    st[17] = a23;
    st[18] = a33;
    st[19] = a43;
    st[20] = a04;
    st[21] = a14;
    st[22] = a24;
    st[23] = a34;
    st[24] = a44;
}

/* The general sponge: absorb `len` bytes at `rate` bytes a block, pad with
 * 0x01 ... 0x80, squeeze `out_len` <= rate bytes. */
static void keccak(size_t rate, const uint8_t *in, size_t len, uint8_t *out, size_t out_len)
{
    uint64_t st[25] = {0};
    uint64_t lane;
    while (len >= rate) {
        for (size_t i = 0; i < rate / 8; i++) {
            memcpy(&lane, in + 8 * i, 8);
            st[i] ^= lane;
        }
        keccakf1600(st);
        in += rate;
        len -= rate;
    }
    uint8_t block[200] = {0};
    memcpy(block, in, len);
    block[len] ^= 0x01;
    block[rate - 1] ^= 0x80;
    for (size_t i = 0; i < rate / 8; i++) {
        memcpy(&lane, block + 8 * i, 8);
        st[i] ^= lane;
    }
    keccakf1600(st);
    memcpy(out, st, out_len);
}

void keccak256(const uint8_t *in, size_t len, uint8_t out[32])
{
    keccak(136, in, len, out, 32);
}

void keccak512(const uint8_t *in, size_t len, uint8_t out[64])
{
    keccak(72, in, len, out, 64);
}

/* The padding of a message that ends `len` bytes (a multiple of 8) into a
 * one-block sponge of `rate` bytes goes into lanes len/8 and rate/8 - 1. */
void keccak512_64(const uint64_t in[8], uint64_t out[8])
{
    uint64_t st[25] = {0};
    memcpy(st, in, 64);
    st[8] = 0x8000000000000001ULL; /* 0x01 at byte 64, 0x80 at byte 71 */
    keccakf1600(st);
    memcpy(out, st, 64);
}

void keccak512_40(const uint8_t in[40], uint64_t out[8])
{
    uint64_t st[25] = {0};
    memcpy(st, in, 40);
    st[5] = 0x01;
    st[8] = 0x8000000000000000ULL;
    keccakf1600(st);
    memcpy(out, st, 64);
}

void keccak256_96(const uint64_t in[12], uint8_t out[32])
{
    uint64_t st[25] = {0};
    memcpy(st, in, 96);
    st[12] = 0x01;
    st[16] = 0x8000000000000000ULL;
    keccakf1600(st);
    memcpy(out, st, 32);
}
