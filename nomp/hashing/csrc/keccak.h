/* Keccak as Ethereum uses it (original padding), for nomp's ethash.c. */
#ifndef NOMP_KECCAK_H
#define NOMP_KECCAK_H

#include <stddef.h>
#include <stdint.h>

void keccakf1600(uint64_t st[25]);
void keccak256(const uint8_t *in, size_t len, uint8_t out[32]);
void keccak512(const uint8_t *in, size_t len, uint8_t out[64]);

/* Fixed-length forms for ethash's hot paths (lanes in host order). */
void keccak512_64(const uint64_t in[8], uint64_t out[8]);  /* in and out may alias */
void keccak512_40(const uint8_t in[40], uint64_t out[8]);  /* header || nonce */
void keccak256_96(const uint64_t in[12], uint8_t out[32]); /* seed || mix digest */

#endif
