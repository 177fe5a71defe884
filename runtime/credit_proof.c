/* SPDX-License-Identifier: MIT */
/* Credit, proven: see credit_proof.h. SipHash-2-4 after Aumasson and Bernstein. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/random.h>

#include "credit_proof.h"

int fdx__credit_key_init(struct fdx__credit_key *key)
{
	size_t got = 0;

	while (got < sizeof(key->k)) {
		ssize_t n = getrandom((char *)key->k + got, sizeof(key->k) - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	return 0;
}

static inline uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND                   \
	do {                       \
		v0 += v1;          \
		v1 = rotl(v1, 13); \
		v1 ^= v0;          \
		v0 = rotl(v0, 32); \
		v2 += v3;          \
		v3 = rotl(v3, 16); \
		v3 ^= v2;          \
		v0 += v3;          \
		v3 = rotl(v3, 21); \
		v3 ^= v0;          \
		v2 += v1;          \
		v1 = rotl(v1, 17); \
		v1 ^= v2;          \
		v2 = rotl(v2, 32); \
	} while (0)

uint64_t fdx__siphash24_words(const struct fdx__credit_key *key, const uint64_t *m, unsigned n)
{
	uint64_t v0 = key->k[0] ^ 0x736f6d6570736575ull;
	uint64_t v1 = key->k[1] ^ 0x646f72616e646f6dull;
	uint64_t v2 = key->k[0] ^ 0x6c7967656e657261ull;
	uint64_t v3 = key->k[1] ^ 0x7465646279746573ull;
	uint64_t last = (uint64_t)(8u * n) << 56;

	for (unsigned i = 0; i < n; i++) {
		v3 ^= m[i];
		SIPROUND;
		SIPROUND;
		v0 ^= m[i];
	}
	v3 ^= last;
	SIPROUND;
	SIPROUND;
	v0 ^= last;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint32_t fdx__credit_proof(const struct fdx__credit_key *key, uint32_t gate, uint32_t ch,
			   uint64_t opening, uint64_t total)
{
	uint64_t m[3] = {(uint64_t)gate << 32 | ch, opening, total};

	return (uint32_t)fdx__siphash24_words(key, m, 3);
}
