/* The share check: from a job and a miner's extranonce2/ntime/nonce to the
 * block header and its proof-of-work hash, in one call. Written for nomp.
 *
 * Per job, the SHA-256 state after the whole 64-byte blocks of coinb1 is
 * computed once; per share only the rest of the coinbase is hashed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

#include "nomp_hash.h"

int scrypt_headers(const uint8_t *in, size_t in_stride, uint8_t *out, size_t out_stride, size_t count);

struct nomp_job {
    int algorithm;
    uint32_t nbits;
    uint32_t coinb1_midstate[8];
    size_t coinb1_prefix;   /* bytes of coinb1 inside the midstate */
    size_t coinb1_len;
    size_t coinb2_len;
    size_t branch_count;
    uint8_t prevhash[32];
    uint8_t *coinb1;
    uint8_t *coinb2;
    uint8_t *branch;
};

nomp_job *nomp_job_new(int algorithm,
                       const unsigned char *coinb1, size_t coinb1_len,
                       const unsigned char *coinb2, size_t coinb2_len,
                       const unsigned char *branch, size_t branch_count,
                       const unsigned char *prevhash, uint32_t nbits)
{
    if (algorithm != NOMP_ALGO_SHA256D && algorithm != NOMP_ALGO_SCRYPT)
        return NULL;
    nomp_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return NULL;
    /* One allocation for the three byte strings; +1 keeps malloc(0) away. */
    uint8_t *bytes = malloc(coinb1_len + coinb2_len + 32 * branch_count + 1);
    if (bytes == NULL) {
        free(job);
        return NULL;
    }
    job->algorithm = algorithm;
    job->nbits = nbits;
    job->coinb1 = bytes;
    job->coinb2 = bytes + coinb1_len;
    job->branch = bytes + coinb1_len + coinb2_len;
    memcpy(job->coinb1, coinb1, coinb1_len);
    memcpy(job->coinb2, coinb2, coinb2_len);
    memcpy(job->branch, branch, 32 * branch_count);
    memcpy(job->prevhash, prevhash, 32);
    job->coinb1_len = coinb1_len;
    job->coinb2_len = coinb2_len;
    job->branch_count = branch_count;
    job->coinb1_prefix = coinb1_len & ~(size_t)63;
    memcpy(job->coinb1_midstate, sha256_initial_state, 32);
    sha256_compress(job->coinb1_midstate, coinb1, coinb1_len / 64);
    return job;
}

void nomp_job_free(nomp_job *job)
{
    if (job != NULL) {
        free(job->coinb1);
        free(job);
    }
}

/* The extranonce length of a share record, or -EINVAL if malformed. */
static int extranonce_length(const uint8_t *share)
{
    size_t length = share[16];
    if (length == 0 || length > 16 || share[17] | share[18] | share[19])
        return -EINVAL;
    return (int)length;
}

static void write_header(const nomp_job *job, const uint8_t *share, const uint8_t root[32], uint8_t *out)
{
    memcpy(out, share + 20, 4); /* version */
    memcpy(out + 4, job->prevhash, 32);
    memcpy(out + 36, root, 32);
    memcpy(out + 68, share + 24, 4); /* ntime */
    store_le32(out + 72, job->nbits);
    memcpy(out + 76, share + 28, 4); /* nonce */
}

/* One share: coinbase txid, merkle root, header into out[0..80). */
static void share_header(const nomp_job *job, const uint8_t *share, size_t extranonce_len, uint8_t *out)
{
    sha256_ctx ctx;
    memcpy(ctx.state, job->coinb1_midstate, 32);
    ctx.length = job->coinb1_prefix;
    ctx.buffered = 0;
    sha256_update(&ctx, job->coinb1 + job->coinb1_prefix, job->coinb1_len - job->coinb1_prefix);
    sha256_update(&ctx, share, extranonce_len);
    sha256_update(&ctx, job->coinb2, job->coinb2_len);

    uint8_t pair[64], once[32];
    sha256_final(&ctx, once);
    sha256_32(once, pair); /* pair[0..32) = coinbase txid, internal order */
    for (size_t i = 0; i < job->branch_count; i++) {
        memcpy(pair + 32, job->branch + 32 * i, 32);
        sha256d_64(pair, pair);
    }
    write_header(job, share, pair, out);
}

#define PAIR_TAIL_MAX 1024

/* The coinbase after the cached midstate, padded for SHA-256; 0 if it does
 * not fit in PAIR_TAIL_MAX bytes. */
static size_t padded_tail(const nomp_job *job, const uint8_t *share, size_t extranonce_len, uint8_t *buf)
{
    size_t head = job->coinb1_len - job->coinb1_prefix;
    size_t length = head + extranonce_len + job->coinb2_len;
    size_t padded = (length + 9 + 63) & ~(size_t)63;
    if (padded > PAIR_TAIL_MAX)
        return 0;
    uint64_t bits = (uint64_t)(job->coinb1_len + extranonce_len + job->coinb2_len) * 8;
    memcpy(buf, job->coinb1 + job->coinb1_prefix, head);
    memcpy(buf + head, share, extranonce_len);
    memcpy(buf + head + extranonce_len, job->coinb2, job->coinb2_len);
    memset(buf + length, 0, padded - length);
    buf[length] = 0x80;
    for (int i = 0; i < 8; i++)
        buf[padded - 1 - i] = (uint8_t)(bits >> (8 * i));
    return padded;
}

/* Two shares with the same extranonce length, hashed in lockstep. Returns
 * 0 when their coinbase is too long for the paired path. */
static int share_headers_x2(const nomp_job *job, const uint8_t *share_a, const uint8_t *share_b,
                            size_t extranonce_len, uint8_t *out_a, uint8_t *out_b)
{
    uint8_t tail_a[PAIR_TAIL_MAX], tail_b[PAIR_TAIL_MAX];
    size_t padded = padded_tail(job, share_a, extranonce_len, tail_a);
    if (padded == 0)
        return 0;
    padded_tail(job, share_b, extranonce_len, tail_b);

    uint32_t a[8], b[8];
    memcpy(a, job->coinb1_midstate, 32);
    memcpy(b, job->coinb1_midstate, 32);
    sha256_compress2(a, tail_a, b, tail_b, padded / 64);

    /* second SHA-256 of each 32-byte digest */
    uint8_t block_a[64] = {0}, block_b[64] = {0};
    for (int i = 0; i < 8; i++) {
        store_be32(block_a + 4 * i, a[i]);
        store_be32(block_b + 4 * i, b[i]);
    }
    block_a[32] = block_b[32] = 0x80;
    block_a[62] = block_b[62] = 0x01;
    memcpy(a, sha256_initial_state, 32);
    memcpy(b, sha256_initial_state, 32);
    sha256_compress2(a, block_a, b, block_b, 1);

    uint8_t pair_a[64], pair_b[64];
    for (int i = 0; i < 8; i++) {
        store_be32(pair_a + 4 * i, a[i]);
        store_be32(pair_b + 4 * i, b[i]);
    }
    for (size_t i = 0; i < job->branch_count; i++) {
        memcpy(pair_a + 32, job->branch + 32 * i, 32);
        memcpy(pair_b + 32, job->branch + 32 * i, 32);
        sha256d_64_x2(pair_a, pair_b, pair_a, pair_b);
    }
    write_header(job, share_a, pair_a, out_a);
    write_header(job, share_b, pair_b, out_b);
    return 1;
}

int nomp_job_check(const nomp_job *job, const unsigned char *shares, size_t count,
                   unsigned char *results)
{
    for (size_t i = 0; i < count; i++) {
        if (extranonce_length(shares + i * NOMP_SHARE_SIZE) < 0)
            return -EINVAL;
    }
    for (size_t i = 0; i < count;) {
        const uint8_t *share = shares + i * NOMP_SHARE_SIZE;
        uint8_t *out = results + i * NOMP_RESULT_SIZE;
        size_t length = (size_t)extranonce_length(share);
        if (i + 1 < count && (size_t)extranonce_length(share + NOMP_SHARE_SIZE) == length &&
            share_headers_x2(job, share, share + NOMP_SHARE_SIZE, length, out, out + NOMP_RESULT_SIZE)) {
            i += 2;
            continue;
        }
        share_header(job, share, length, out);
        i += 1;
    }
    if (job->algorithm == NOMP_ALGO_SCRYPT)
        return scrypt_headers(results, NOMP_RESULT_SIZE, results + 80, NOMP_RESULT_SIZE, count);
    size_t i = 0;
    for (; i + 1 < count; i += 2) {
        uint8_t *a = results + i * NOMP_RESULT_SIZE, *b = a + NOMP_RESULT_SIZE;
        sha256d_80_x2(a, b, a + 80, b + 80);
    }
    if (i < count) {
        uint8_t *r = results + i * NOMP_RESULT_SIZE;
        sha256d(r, 80, r + 80);
    }
    return 0;
}

void nomp_sha256d(const unsigned char *data, size_t len, unsigned char *out)
{
    sha256d(data, len, out);
}

const char *nomp_sha256_implementation(void)
{
    return sha256_implementation();
}

void nomp_sha256_force_portable(int on)
{
    sha256_select(on);
}
