/* SHA-256 used by the share check and by scrypt's PBKDF2 step.
 *
 * Internal header: not part of the cffi interface. The compression function
 * is picked once at load time: the x86 SHA extensions when the CPU has them,
 * portable C otherwise. */
#ifndef NOMP_SHA256_H
#define NOMP_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[8];
    uint64_t length;        /* bytes hashed so far */
    uint8_t buffer[64];
    size_t buffered;
} sha256_ctx;

/* Compress `blocks` 64-byte blocks into `state`. */
typedef void (*sha256_compress_fn)(uint32_t state[8], const uint8_t *data, size_t blocks);

/* Two independent compressions of the same number of blocks, interleaved. */
typedef void (*sha256_compress2_fn)(uint32_t state_a[8], const uint8_t *data_a,
                                    uint32_t state_b[8], const uint8_t *data_b, size_t blocks);

extern sha256_compress_fn sha256_compress;
extern sha256_compress2_fn sha256_compress2;
extern const uint32_t sha256_initial_state[8];

void sha256_select(int force_portable);
const char *sha256_implementation(void);

void sha256_init(sha256_ctx *ctx);
void sha256_update(sha256_ctx *ctx, const uint8_t *data, size_t len);
void sha256_final(sha256_ctx *ctx, uint8_t out[32]);

void sha256(const uint8_t *data, size_t len, uint8_t out[32]);
void sha256d(const uint8_t *data, size_t len, uint8_t out[32]);
/* sha256d of exactly 64 bytes: one merkle tree step. */
void sha256d_64(const uint8_t in[64], uint8_t out[32]);
/* Two at once: sha256d of two 64-byte inputs, and of two 80-byte headers. */
void sha256d_64_x2(const uint8_t in_a[64], const uint8_t in_b[64], uint8_t out_a[32], uint8_t out_b[32]);
void sha256d_80_x2(const uint8_t in_a[80], const uint8_t in_b[80], uint8_t out_a[32], uint8_t out_b[32]);
/* sha256 of exactly 32 bytes, continuing nothing: the second half of sha256d. */
void sha256_32(const uint8_t in[32], uint8_t out[32]);

static inline uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t load_le32(const uint8_t *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static inline void store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#endif
