/* SHA-256 (FIPS 180-4), written for nomp.
 *
 * Two compression functions: portable C, and one using the x86 SHA
 * extensions (SHA-NI), chosen at load time by CPUID. Everything above the
 * compression function is shared. */
#include <string.h>

#include "sha256.h"

#if defined(__x86_64__) || defined(__i386__)
#define NOMP_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

const uint32_t sha256_initial_state[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress_portable(uint32_t state[8], const uint8_t *data, size_t blocks)
{
    uint32_t w[64];
    while (blocks--) {
        for (int i = 0; i < 16; i++)
            w[i] = load_be32(data + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
        data += 64;
    }
}

#ifdef NOMP_X86
/* The SHA-NI instructions keep the eight working variables in two registers,
 * ordered ABEF and CDGH; each sha256rnds2 does two rounds. The message
 * schedule runs four words ahead in four rotating registers. */
__attribute__((target("sha,sse4.1")))
static void compress_shani(uint32_t state[8], const uint8_t *data, size_t blocks)
{
    const __m128i byteswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&state[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);

    while (blocks--) {
        __m128i saved_abef = abef, saved_cdgh = cdgh;
        __m128i m[4];
        for (int g = 0; g < 16; g++) {
            __m128i words;
            if (g < 4) {
                words = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * g)), byteswap);
            } else {
                /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16] */
                __m128i oldest = m[g & 3], older = m[(g + 1) & 3];
                __m128i prev2 = m[(g + 2) & 3], prev1 = m[(g + 3) & 3];
                words = _mm_sha256msg1_epu32(oldest, older);
                words = _mm_add_epi32(words, _mm_alignr_epi8(prev1, prev2, 4));
                words = _mm_sha256msg2_epu32(words, prev1);
            }
            m[g & 3] = words;
            __m128i wk = _mm_add_epi32(words, _mm_loadu_si128((const __m128i *)&K[4 * g]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
        }
        abef = _mm_add_epi32(abef, saved_abef);
        cdgh = _mm_add_epi32(cdgh, saved_cdgh);
        data += 64;
    }

    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
}

/* Two independent compressions in lockstep: each sha256rnds2 waits on the
 * one before it, so a second chain fills the pipeline in between. */
__attribute__((target("sha,sse4.1")))
static void compress2_shani(uint32_t state_a[8], const uint8_t *data_a,
                            uint32_t state_b[8], const uint8_t *data_b, size_t blocks)
{
    const __m128i byteswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i abef[2], cdgh[2];
    uint32_t *states[2] = {state_a, state_b};
    const uint8_t *data[2] = {data_a, data_b};
    for (int s = 0; s < 2; s++) {
        __m128i cdab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&states[s][0]), 0xB1);
        __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&states[s][4]), 0x1B);
        abef[s] = _mm_alignr_epi8(cdab, efgh, 8);
        cdgh[s] = _mm_blend_epi16(efgh, cdab, 0xF0);
    }
    while (blocks--) {
        __m128i saved_abef[2] = {abef[0], abef[1]}, saved_cdgh[2] = {cdgh[0], cdgh[1]};
        __m128i m[2][4];
        for (int g = 0; g < 16; g++) {
            __m128i k = _mm_loadu_si128((const __m128i *)&K[4 * g]);
            for (int s = 0; s < 2; s++) {
                __m128i words;
                if (g < 4) {
                    words = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data[s] + 16 * g)), byteswap);
                } else {
                    words = _mm_sha256msg1_epu32(m[s][g & 3], m[s][(g + 1) & 3]);
                    words = _mm_add_epi32(words, _mm_alignr_epi8(m[s][(g + 3) & 3], m[s][(g + 2) & 3], 4));
                    words = _mm_sha256msg2_epu32(words, m[s][(g + 3) & 3]);
                }
                m[s][g & 3] = words;
                __m128i wk = _mm_add_epi32(words, k);
                cdgh[s] = _mm_sha256rnds2_epu32(cdgh[s], abef[s], wk);
                abef[s] = _mm_sha256rnds2_epu32(abef[s], cdgh[s], _mm_shuffle_epi32(wk, 0x0E));
            }
        }
        for (int s = 0; s < 2; s++) {
            abef[s] = _mm_add_epi32(abef[s], saved_abef[s]);
            cdgh[s] = _mm_add_epi32(cdgh[s], saved_cdgh[s]);
            data[s] += 64;
        }
    }
    for (int s = 0; s < 2; s++) {
        __m128i feba = _mm_shuffle_epi32(abef[s], 0x1B);
        __m128i dchg = _mm_shuffle_epi32(cdgh[s], 0xB1);
        _mm_storeu_si128((__m128i *)&states[s][0], _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128((__m128i *)&states[s][4], _mm_alignr_epi8(dchg, feba, 8));
    }
}

static int cpu_has_shani(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    int sse41 = (c >> 19) & 1, ssse3 = (c >> 9) & 1;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return sse41 && ssse3 && ((b >> 29) & 1);
}
#endif

static void compress2_portable(uint32_t state_a[8], const uint8_t *data_a,
                               uint32_t state_b[8], const uint8_t *data_b, size_t blocks)
{
    compress_portable(state_a, data_a, blocks);
    compress_portable(state_b, data_b, blocks);
}

sha256_compress_fn sha256_compress = compress_portable;
sha256_compress2_fn sha256_compress2 = compress2_portable;
static const char *implementation = "portable";

void sha256_select(int force_portable)
{
    sha256_compress = compress_portable;
    sha256_compress2 = compress2_portable;
    implementation = "portable";
#ifdef NOMP_X86
    if (!force_portable && cpu_has_shani()) {
        sha256_compress = compress_shani;
        sha256_compress2 = compress2_shani;
        implementation = "sha-ni";
    }
#else
    (void)force_portable;
#endif
}

const char *sha256_implementation(void)
{
    return implementation;
}

__attribute__((constructor)) static void select_at_load(void)
{
    sha256_select(0);
}

void sha256_init(sha256_ctx *ctx)
{
    memcpy(ctx->state, sha256_initial_state, sizeof ctx->state);
    ctx->length = 0;
    ctx->buffered = 0;
}

void sha256_update(sha256_ctx *ctx, const uint8_t *data, size_t len)
{
    ctx->length += len;
    if (ctx->buffered) {
        size_t take = 64 - ctx->buffered;
        if (take > len)
            take = len;
        memcpy(ctx->buffer + ctx->buffered, data, take);
        ctx->buffered += take;
        data += take;
        len -= take;
        if (ctx->buffered < 64)
            return;
        sha256_compress(ctx->state, ctx->buffer, 1);
        ctx->buffered = 0;
    }
    if (len >= 64) {
        sha256_compress(ctx->state, data, len / 64);
        data += len & ~(size_t)63;
        len &= 63;
    }
    memcpy(ctx->buffer, data, len);
    ctx->buffered = len;
}

void sha256_final(sha256_ctx *ctx, uint8_t out[32])
{
    uint64_t bits = ctx->length * 8;
    uint8_t *buf = ctx->buffer;
    size_t n = ctx->buffered;
    buf[n++] = 0x80;
    if (n > 56) {
        memset(buf + n, 0, 64 - n);
        sha256_compress(ctx->state, buf, 1);
        n = 0;
    }
    memset(buf + n, 0, 56 - n);
    for (int i = 0; i < 8; i++)
        buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_compress(ctx->state, buf, 1);
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, ctx->state[i]);
}

void sha256(const uint8_t *data, size_t len, uint8_t out[32])
{
    sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, data, len);
    sha256_final(&ctx, out);
}

void sha256_32(const uint8_t in[32], uint8_t out[32])
{
    uint8_t block[64];
    uint32_t state[8];
    memcpy(block, in, 32);
    memset(block + 32, 0, 32);
    block[32] = 0x80;
    block[62] = 0x01; /* 256 bits */
    memcpy(state, sha256_initial_state, sizeof state);
    sha256_compress(state, block, 1);
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, state[i]);
}

void sha256d(const uint8_t *data, size_t len, uint8_t out[32])
{
    uint8_t first[32];
    sha256(data, len, first);
    sha256_32(first, out);
}

void sha256d_64(const uint8_t in[64], uint8_t out[32])
{
    /* The padding block of a 64-byte message is a constant. */
    static const uint8_t pad64[64] = {0x80, [62] = 0x02};
    uint32_t state[8];
    uint8_t first[32];
    memcpy(state, sha256_initial_state, sizeof state);
    sha256_compress(state, in, 1);
    sha256_compress(state, pad64, 1);
    for (int i = 0; i < 8; i++)
        store_be32(first + 4 * i, state[i]);
    sha256_32(first, out);
}

static void store_state(uint8_t out[32], const uint32_t state[8])
{
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, state[i]);
}

void sha256d_64_x2(const uint8_t in_a[64], const uint8_t in_b[64], uint8_t out_a[32], uint8_t out_b[32])
{
    static const uint8_t pad64[64] = {0x80, [62] = 0x02};
    uint32_t a[8], b[8];
    uint8_t block_a[64] = {0}, block_b[64] = {0};
    memcpy(a, sha256_initial_state, 32);
    memcpy(b, sha256_initial_state, 32);
    sha256_compress2(a, in_a, b, in_b, 1);
    sha256_compress2(a, pad64, b, pad64, 1);
    store_state(block_a, a);
    store_state(block_b, b);
    block_a[32] = block_b[32] = 0x80;
    block_a[62] = block_b[62] = 0x01; /* 256 bits */
    memcpy(a, sha256_initial_state, 32);
    memcpy(b, sha256_initial_state, 32);
    sha256_compress2(a, block_a, b, block_b, 1);
    store_state(out_a, a);
    store_state(out_b, b);
}

void sha256d_80_x2(const uint8_t in_a[80], const uint8_t in_b[80], uint8_t out_a[32], uint8_t out_b[32])
{
    uint8_t tail_a[64] = {0}, tail_b[64] = {0};
    uint32_t a[8], b[8];
    memcpy(tail_a, in_a + 64, 16);
    memcpy(tail_b, in_b + 64, 16);
    tail_a[16] = tail_b[16] = 0x80;
    tail_a[62] = tail_b[62] = 0x02; /* 640 bits = 0x280 */
    tail_a[63] = tail_b[63] = 0x80;
    memcpy(a, sha256_initial_state, 32);
    memcpy(b, sha256_initial_state, 32);
    sha256_compress2(a, in_a, b, in_b, 1);
    sha256_compress2(a, tail_a, b, tail_b, 1);
    uint8_t first_a[32], first_b[32];
    store_state(first_a, a);
    store_state(first_b, b);
    uint8_t block_a[64] = {0}, block_b[64] = {0};
    memcpy(block_a, first_a, 32);
    memcpy(block_b, first_b, 32);
    block_a[32] = block_b[32] = 0x80;
    block_a[62] = block_b[62] = 0x01;
    memcpy(a, sha256_initial_state, 32);
    memcpy(b, sha256_initial_state, 32);
    sha256_compress2(a, block_a, b, block_b, 1);
    store_state(out_a, a);
    store_state(out_b, b);
}
