/* scrypt(N=1024, r=1, p=1) of 80-byte block headers, as Litecoin uses it:
 * password = salt = the header, 32 bytes out. Written for nomp.
 *
 * The two PBKDF2-HMAC-SHA256 passes are specialised for an 80-byte password
 * and one iteration. ROMix runs several headers side by side (see
 * scrypt_lanes.h), or a lone one with SIMD within its hash (see
 * scrypt_single.h); the 128 KiB-per-hash scratch is kept per thread. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

#include "nomp_hash.h"

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define MAX_LANES 16
#define SCRATCH_BYTES ((size_t)1024 * 32 * 4 * MAX_LANES)

typedef struct {
    uint32_t inner[8]; /* state after the key ^ ipad block */
    uint32_t outer[8]; /* state after the key ^ opad block */
} hmac_key;

static void hmac_key_init(hmac_key *h, const uint8_t *key, size_t len)
{
    uint8_t k[64] = {0}, pad[64];
    if (len > 64)
        sha256(key, len, k);
    else
        memcpy(k, key, len);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    memcpy(h->inner, sha256_initial_state, 32);
    sha256_compress(h->inner, pad, 1);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    memcpy(h->outer, sha256_initial_state, 32);
    sha256_compress(h->outer, pad, 1);
}

/* Finish HMAC: `inner` has absorbed everything; hash its digest with opad. */
static void hmac_outer(const hmac_key *h, const uint32_t inner[8], uint8_t out[32])
{
    uint8_t block[64] = {0};
    uint32_t state[8];
    for (int i = 0; i < 8; i++)
        store_be32(block + 4 * i, inner[i]);
    block[32] = 0x80;
    block[62] = 0x03; /* (64 + 32) * 8 = 768 bits */
    memcpy(state, h->outer, 32);
    sha256_compress(state, block, 1);
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, state[i]);
}

/* B = PBKDF2(header, header, 1, 128) as 32 little-endian words. */
static void pbkdf2_first(const hmac_key *h, const uint8_t header[80], uint32_t words[32])
{
    uint32_t salted[8];
    memcpy(salted, h->inner, 32);
    sha256_compress(salted, header, 1);
    for (uint32_t i = 1; i <= 4; i++) {
        uint8_t block[64] = {0}, digest[32];
        uint32_t state[8];
        memcpy(block, header + 64, 16);
        store_be32(block + 16, i);
        block[20] = 0x80;
        block[62] = 0x04; /* (64 + 84) * 8 = 1184 = 0x4a0 bits */
        block[63] = 0xa0;
        memcpy(state, salted, 32);
        sha256_compress(state, block, 1);
        hmac_outer(h, state, digest);
        for (int k = 0; k < 8; k++)
            words[(i - 1) * 8 + k] = load_le32(digest + 4 * k);
    }
}

/* out = PBKDF2(header, B, 1, 32). */
static void pbkdf2_second(const hmac_key *h, const uint32_t words[32], uint8_t out[32])
{
    uint8_t b[128], block[64] = {0};
    uint32_t state[8];
    for (int k = 0; k < 32; k++)
        store_le32(b + 4 * k, words[k]);
    memcpy(state, h->inner, 32);
    sha256_compress(state, b, 2);
    store_be32(block, 1);
    block[4] = 0x80;
    block[62] = 0x06; /* (64 + 132) * 8 = 1568 = 0x620 bits */
    block[63] = 0x20;
    sha256_compress(state, block, 1);
    hmac_outer(h, state, out);
}

/* Portable layout: entry i is the 32 state vectors as they are (word-major). */
#define STORE_V_PORTABLE(x, V, i)                                              \
    do {                                                                       \
        VEC *restrict v_ = (VEC *)(V) + (size_t)(i) * 32;                      \
        for (int k = 0; k < 32; k++)                                           \
            v_[k] = x[k];                                                      \
    } while (0)
#define XOR_V_PORTABLE(x, V)                                                   \
    do {                                                                       \
        uint32_t j_[LANES];                                                    \
        for (int l = 0; l < LANES; l++)                                        \
            j_[l] = x[16][l] & 1023;                                           \
        for (int k = 0; k < 32; k++) {                                         \
            VEC t_;                                                            \
            for (int l = 0; l < LANES; l++)                                    \
                t_[l] = V[(size_t)j_[l] * 32 * LANES + (size_t)k * LANES + l]; \
            x[k] ^= t_;                                                        \
        }                                                                      \
    } while (0)

typedef uint32_t vec1 __attribute__((vector_size(4)));
typedef uint32_t vec4 __attribute__((vector_size(16)));
typedef uint32_t vec8 __attribute__((vector_size(32)));
typedef uint32_t vec16 __attribute__((vector_size(64)));

#define STORE_V STORE_V_PORTABLE
#define XOR_V XOR_V_PORTABLE

#define LANES 1
#define VEC vec1
#define FUNC romix_1
#define ATTRS
#include "scrypt_lanes.h"
#undef FUNC
#undef ATTRS
#undef LANES
#undef VEC

#define LANES 4
#define VEC vec4
#define FUNC romix_4_portable
#define ATTRS
#include "scrypt_lanes.h"
#undef FUNC
#undef ATTRS
#undef LANES
#undef VEC

#define LANES 8
#define VEC vec8
#define FUNC romix_8_portable
#define ATTRS
#include "scrypt_lanes.h"
#undef FUNC
#undef ATTRS
#undef LANES
#undef VEC

#undef STORE_V
#undef XOR_V

#if defined(__x86_64__)
#include <immintrin.h>

/* Transpose a 16x16 matrix of 32-bit words held in 16 vectors: out[c] gets
 * column c of the rows in r. Its own inverse. */
__attribute__((target("avx512f"), always_inline)) static inline void
transpose16(__m512i out[16], const __m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    /* u[4m+p], 128-bit lane q: column 4q+p of rows 4m..4m+3 */
    for (int m = 0; m < 16; m += 4) {
        u[m] = _mm512_unpacklo_epi64(t[m], t[m + 2]);
        u[m + 1] = _mm512_unpackhi_epi64(t[m], t[m + 2]);
        u[m + 2] = _mm512_unpacklo_epi64(t[m + 1], t[m + 3]);
        u[m + 3] = _mm512_unpackhi_epi64(t[m + 1], t[m + 3]);
    }
    /* column 4q+p, lane m = lane q of u[4m+p]: a 4x4 transpose of lanes */
    for (int p = 0; p < 4; p++) {
        __m512i ab_lo = _mm512_shuffle_i32x4(u[p], u[4 + p], 0x44);
        __m512i ab_hi = _mm512_shuffle_i32x4(u[p], u[4 + p], 0xEE);
        __m512i cd_lo = _mm512_shuffle_i32x4(u[8 + p], u[12 + p], 0x44);
        __m512i cd_hi = _mm512_shuffle_i32x4(u[8 + p], u[12 + p], 0xEE);
        out[p] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0x88);
        out[4 + p] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0xDD);
        out[8 + p] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0x88);
        out[12 + p] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0xDD);
    }
}

/* AVX-512 layout: entry i is lane-major (32 words of lane 0, then lane 1,
 * ...), so the random reads of the second loop touch two cache lines per
 * lane instead of thirty-two. */
#define STORE_V_AVX512(x, V, i)                                                \
    do {                                                                       \
        __m512i lo_[16], hi_[16];                                              \
        __m512i *v_ = (__m512i *)(V) + (size_t)(i) * 32;                       \
        transpose16(lo_, (const __m512i *)&x[0]);                              \
        transpose16(hi_, (const __m512i *)&x[16]);                             \
        for (int l = 0; l < 16; l++) {                                         \
            _mm512_store_si512(&v_[2 * l], lo_[l]);                            \
            _mm512_store_si512(&v_[2 * l + 1], hi_[l]);                        \
        }                                                                      \
    } while (0)
#define XOR_V_AVX512(x, V)                                                     \
    do {                                                                       \
        uint32_t j_[16] __attribute__((aligned(64)));                          \
        __m512i lo_[16], hi_[16], tlo_[16], thi_[16];                          \
        _mm512_store_si512(j_, (__m512i)x[16]);                                \
        for (int l = 0; l < 16; l++) {                                         \
            const __m512i *v_ = (const __m512i *)(V) + (size_t)(j_[l] & 1023) * 32 + 2 * l; \
            lo_[l] = _mm512_load_si512(&v_[0]);                                \
            hi_[l] = _mm512_load_si512(&v_[1]);                                \
        }                                                                      \
        transpose16(tlo_, lo_);                                                \
        transpose16(thi_, hi_);                                                \
        for (int k = 0; k < 16; k++) {                                         \
            x[k] ^= (VEC)tlo_[k];                                              \
            x[16 + k] ^= (VEC)thi_[k];                                         \
        }                                                                      \
    } while (0)

/* The same for eight lanes in AVX2 registers: an 8x8 transpose. */
__attribute__((target("avx2"), always_inline)) static inline void
transpose8(__m256i out[8], const __m256i r[8])
{
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int m = 0; m < 8; m += 4) {
        u[m] = _mm256_unpacklo_epi64(t[m], t[m + 2]);
        u[m + 1] = _mm256_unpackhi_epi64(t[m], t[m + 2]);
        u[m + 2] = _mm256_unpacklo_epi64(t[m + 1], t[m + 3]);
        u[m + 3] = _mm256_unpackhi_epi64(t[m + 1], t[m + 3]);
    }
    for (int p = 0; p < 4; p++) {
        out[p] = _mm256_permute2x128_si256(u[p], u[4 + p], 0x20);
        out[4 + p] = _mm256_permute2x128_si256(u[p], u[4 + p], 0x31);
    }
}

#define STORE_V_AVX2(x, V, i)                                                  \
    do {                                                                       \
        __m256i *v_ = (__m256i *)(V) + (size_t)(i) * 32;                       \
        for (int b = 0; b < 4; b++) {                                          \
            __m256i t_[8];                                                     \
            transpose8(t_, (const __m256i *)&x[8 * b]);                        \
            for (int l = 0; l < 8; l++)                                        \
                _mm256_store_si256(&v_[4 * l + b], t_[l]);                     \
        }                                                                      \
    } while (0)
#define XOR_V_AVX2(x, V)                                                       \
    do {                                                                       \
        uint32_t j_[8] __attribute__((aligned(32)));                           \
        const __m256i *row_[8];                                                \
        _mm256_store_si256((__m256i *)j_, (__m256i)x[16]);                     \
        for (int l = 0; l < 8; l++)                                            \
            row_[l] = (const __m256i *)(V) + (size_t)(j_[l] & 1023) * 32 + 4 * l; \
        for (int b = 0; b < 4; b++) {                                          \
            __m256i in_[8], t_[8];                                             \
            for (int l = 0; l < 8; l++)                                        \
                in_[l] = _mm256_load_si256(&row_[l][b]);                       \
            transpose8(t_, in_);                                               \
            for (int k = 0; k < 8; k++)                                        \
                x[8 * b + k] ^= (VEC)t_[k];                                    \
        }                                                                      \
    } while (0)

/* And for four lanes in SSE2 registers (every x86-64 CPU has them): a 4x4 transpose. */
__attribute__((always_inline)) static inline void transpose4(__m128i out[4], const __m128i r[4])
{
    __m128i t0 = _mm_unpacklo_epi32(r[0], r[1]);
    __m128i t1 = _mm_unpacklo_epi32(r[2], r[3]);
    __m128i t2 = _mm_unpackhi_epi32(r[0], r[1]);
    __m128i t3 = _mm_unpackhi_epi32(r[2], r[3]);
    out[0] = _mm_unpacklo_epi64(t0, t1);
    out[1] = _mm_unpackhi_epi64(t0, t1);
    out[2] = _mm_unpacklo_epi64(t2, t3);
    out[3] = _mm_unpackhi_epi64(t2, t3);
}

#define STORE_V_SSE2(x, V, i)                                                  \
    do {                                                                       \
        __m128i *v_ = (__m128i *)(V) + (size_t)(i) * 32;                       \
        for (int b = 0; b < 8; b++) {                                          \
            __m128i t_[4];                                                     \
            transpose4(t_, (const __m128i *)&x[4 * b]);                        \
            for (int l = 0; l < 4; l++)                                        \
                _mm_store_si128(&v_[8 * l + b], t_[l]);                        \
        }                                                                      \
    } while (0)
#define XOR_V_SSE2(x, V)                                                       \
    do {                                                                       \
        uint32_t j_[4] __attribute__((aligned(16)));                           \
        const __m128i *row_[4];                                                \
        _mm_store_si128((__m128i *)j_, (__m128i)x[16]);                        \
        for (int l = 0; l < 4; l++)                                            \
            row_[l] = (const __m128i *)(V) + (size_t)(j_[l] & 1023) * 32 + 8 * l; \
        for (int b = 0; b < 8; b++) {                                          \
            __m128i in_[4], t_[4];                                             \
            for (int l = 0; l < 4; l++)                                        \
                in_[l] = _mm_load_si128(&row_[l][b]);                          \
            transpose4(t_, in_);                                               \
            for (int k = 0; k < 4; k++)                                        \
                x[4 * b + k] ^= (VEC)t_[k];                                    \
        }                                                                      \
    } while (0)

/* Each lane layout twice: as the CPU's base instructions allow, and with
 * AVX-512VL, whose single-instruction rotate shortens every step of
 * salsa20/8 (the base instructions rotate with two shifts and an or). */
#define STORE_V STORE_V_SSE2
#define XOR_V XOR_V_SSE2
#define LANES 4
#define VEC vec4
#define FUNC romix_4_sse2
#define ATTRS
#include "scrypt_lanes.h"
#undef FUNC
#undef ATTRS
#define FUNC romix_4_avx512vl
#define ATTRS __attribute__((target("avx512f,avx512vl")))
#include "scrypt_lanes.h"
#undef FUNC
#undef ATTRS
#undef LANES
#undef VEC
#undef STORE_V
#undef XOR_V

#define STORE_V STORE_V_AVX2
#define XOR_V XOR_V_AVX2
#define LANES 8
#define VEC vec8
#define FUNC romix_8_avx2
#define ATTRS __attribute__((target("avx2")))
#include "scrypt_lanes.h"
#undef FUNC
#undef ATTRS
#define FUNC romix_8_avx512vl
#define ATTRS __attribute__((target("avx2,avx512f,avx512vl")))
#include "scrypt_lanes.h"
#undef FUNC
#undef ATTRS
#undef LANES
#undef VEC
#undef STORE_V
#undef XOR_V

#define STORE_V STORE_V_AVX512
#define XOR_V XOR_V_AVX512
#define LANES 16
#define VEC vec16
#define FUNC romix_16_avx512
#define ATTRS __attribute__((target("avx512f")))
#include "scrypt_lanes.h"
#undef FUNC
#undef ATTRS
#undef LANES
#undef VEC
#undef STORE_V
#undef XOR_V

/* One hash at a time, its salsa20/8 state in four 128-bit rows (see
 * scrypt_single.h), which makes each step's rotate-and-xor the end of the
 * chain of dependent steps: with the base instructions it is two shifts, an
 * or and an xor; with AVX-512VL the two shifts and one three-way xor
 * (vpternlogd), which measured faster than the rotate instruction and an
 * xor (130 against 155 microseconds a hash on an AMD EPYC). AVX2's VEX forms
 * of the base instructions measured no faster (158 against 160), and its
 * wider registers have nothing to add to 128-bit rows. */
#define XOR_ROTL(x, v, s)                                                      \
    ({                                                                         \
        __m128i t_ = (v);                                                      \
        _mm_xor_si128((x), _mm_or_si128(_mm_slli_epi32(t_, (s)), _mm_srli_epi32(t_, 32 - (s)))); \
    })
#define FUNC romix_1_sse2
#define ATTRS
#include "scrypt_single.h"
#undef FUNC
#undef ATTRS
#undef XOR_ROTL
#define XOR_ROTL(x, v, s)                                                      \
    ({                                                                         \
        __m128i t_ = (v);                                                      \
        _mm_ternarylogic_epi32((x), _mm_slli_epi32(t_, (s)), _mm_srli_epi32(t_, 32 - (s)), 0x96); \
    })
#define FUNC romix_1_avx512vl
#define ATTRS __attribute__((target("avx512f,avx512vl")))
#include "scrypt_single.h"
#undef FUNC
#undef ATTRS
#undef XOR_ROTL
#endif

/* Per-thread scratch, freed when the thread ends. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_create(void)
{
    pthread_key_create(&scratch_key, free);
}

static uint32_t *thread_scratch(void)
{
    pthread_once(&scratch_once, scratch_key_create);
    void *p = pthread_getspecific(scratch_key);
    if (p == NULL) {
        if (posix_memalign(&p, 64, SCRATCH_BYTES) != 0)
            return NULL;
        if (pthread_setspecific(scratch_key, p) != 0) {
            free(p);
            return NULL;
        }
    }
    return p;
}

/* The ROMix kernels by lane count: the best this CPU runs, picked at load
 * time (nomp_scrypt_use_kernels may pick from fewer instruction sets). */
typedef void (*romix_fn)(uint32_t *X, uint32_t *V);
typedef struct {
    romix_fn run;
    const char *name;
} romix_kernel;

static romix_kernel kernel_1, kernel_4, kernel_8, kernel_16;
static char kernel_names[80];

/* Instruction sets, each including those before it. */
static const char *const isa_names[] = {"portable", "sse2", "avx2", "avx512f", "avx512vl"};
enum { ISA_PORTABLE, ISA_SSE2, ISA_AVX2, ISA_AVX512F, ISA_AVX512VL, ISA_COUNT };

static int cpu_isa(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
        return ISA_AVX512VL;
    if (__builtin_cpu_supports("avx512f"))
        return ISA_AVX512F;
    if (__builtin_cpu_supports("avx2"))
        return ISA_AVX2;
    return ISA_SSE2;
#else
    return ISA_PORTABLE;
#endif
}

static void use_isa(int isa)
{
    kernel_1 = (romix_kernel){romix_1, "portable"};
    kernel_4 = (romix_kernel){romix_4_portable, "portable"};
    kernel_8 = (romix_kernel){romix_8_portable, "portable"};
    kernel_16 = (romix_kernel){NULL, "none"};
#if defined(__x86_64__)
    if (isa >= ISA_SSE2) {
        kernel_1 = (romix_kernel){romix_1_sse2, "sse2"};
        kernel_4 = (romix_kernel){romix_4_sse2, "sse2"};
    }
    if (isa >= ISA_AVX2)
        kernel_8 = (romix_kernel){romix_8_avx2, "avx2"};
    if (isa >= ISA_AVX512F)
        kernel_16 = (romix_kernel){romix_16_avx512, "avx512f"};
    if (isa >= ISA_AVX512VL) {
        kernel_1 = (romix_kernel){romix_1_avx512vl, "avx512vl"};
        kernel_4 = (romix_kernel){romix_4_avx512vl, "avx512vl"};
        kernel_8 = (romix_kernel){romix_8_avx512vl, "avx512vl"};
    }
#endif
    snprintf(kernel_names, sizeof kernel_names, "1:%s 4:%s 8:%s 16:%s", kernel_1.name, kernel_4.name,
             kernel_8.name, kernel_16.name);
}

__attribute__((constructor)) static void select_kernels(void)
{
    use_isa(cpu_isa());
}

const char *nomp_scrypt_kernels(void)
{
    return kernel_names;
}

static const romix_kernel *kernel_for(int lanes)
{
    switch (lanes) {
    case 1:
        return &kernel_1;
    case 4:
        return &kernel_4;
    case 8:
        return &kernel_8;
    case 16:
        return kernel_16.run ? &kernel_16 : NULL;
    default:
        return NULL;
    }
}

/* Lanes for `count` waiting headers. One hash is a chain of dependent
 * steps that leaves most of a core's vector units idle, so a kernel costs
 * about the same whether its lanes are full or not, and a wider one a
 * little more: the narrowest kernel that takes them all is the cheapest.
 * The one-lane kernel's vectors work within its hash, which shortens the
 * chain but cannot overlap it with another's, so it still costs more than
 * half a four-lane call (130 against 220 microseconds with AVX-512VL, 160
 * against 305 with SSE2): two or three headers go to four lanes at once
 * rather than one lane at a time. */
static int lanes_for(size_t count)
{
    if (count >= 9 && kernel_16.run)
        return 16;
    if (count >= 5)
        return 8;
    if (count >= 2)
        return 4;
    return 1;
}

/* Hash `count` headers with a `lanes`-wide kernel; count <= lanes. */
static void scrypt_group(const uint8_t *in, size_t in_stride, uint8_t *out, size_t out_stride,
                         size_t count, int lanes, const romix_kernel *kernel, uint32_t *V)
{
    hmac_key keys[MAX_LANES];
    uint32_t words[32];
    uint32_t X[32 * MAX_LANES] __attribute__((aligned(64)));

    memset(X, 0, sizeof(uint32_t) * 32 * (size_t)lanes);
    for (size_t l = 0; l < count; l++) {
        const uint8_t *header = in + l * in_stride;
        hmac_key_init(&keys[l], header, 80);
        pbkdf2_first(&keys[l], header, words);
        for (int k = 0; k < 32; k++)
            X[k * lanes + (int)l] = words[k];
    }
    kernel->run(X, V);
    for (size_t l = 0; l < count; l++) {
        for (int k = 0; k < 32; k++)
            words[k] = X[k * lanes + (int)l];
        pbkdf2_second(&keys[l], words, out + l * out_stride);
    }
}

static int fixed_lanes = 0; /* 0 = by batch size; tests and benchmarks may pin one */

int nomp_scrypt_set_lanes(int lanes)
{
    if (lanes != 0 && kernel_for(lanes) == NULL)
        return -ENOTSUP;
    fixed_lanes = lanes;
    return 0;
}

int nomp_scrypt_use_kernels(const char *isa)
{
    int level = cpu_isa();
    if (isa != NULL) {
        int named = -1;
        for (int i = 0; i < ISA_COUNT; i++) {
            if (strcmp(isa, isa_names[i]) == 0)
                named = i;
        }
        if (named < 0 || named > level)
            return -ENOTSUP;
        level = named;
    }
    use_isa(level);
    if (fixed_lanes != 0 && kernel_for(fixed_lanes) == NULL)
        fixed_lanes = 0;
    return 0;
}

int scrypt_headers(const uint8_t *in, size_t in_stride, uint8_t *out, size_t out_stride, size_t count)
{
    uint32_t *V = thread_scratch();
    if (V == NULL)
        return -ENOMEM;
    while (count > 0) {
        int lanes = fixed_lanes ? fixed_lanes : lanes_for(count);
        size_t n = count < (size_t)lanes ? count : (size_t)lanes;
        scrypt_group(in, in_stride, out, out_stride, n, lanes, kernel_for(lanes), V);
        in += n * in_stride;
        out += n * out_stride;
        count -= n;
    }
    return 0;
}

int nomp_scrypt(const unsigned char *headers, size_t count, unsigned char *out)
{
    return scrypt_headers(headers, 80, out, 32, count);
}
