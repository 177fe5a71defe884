/* SPDX-License-Identifier: MIT */
/*
 * Credit, proven. Every credit a consumer grants a remote producer raises
 * the channel's granted total (the exclusive credit at opening, then every
 * Credit.added); each Credit carries that total and a proof of it: a keyed
 * hash (SipHash-2-4, the gate's random key) of (gate, channel, opening,
 * total). The producer sends each buffer with the latest (total, proof) it
 * was given, its stamp: the credit it was sent under.
 *
 * The consumer then checks every buffer exactly, whatever the timing of its
 * own re-grants (input_channel.c): the buffer must be within the total it
 * names, and a total above the opening's exclusive credit must come with
 * its proof, which only the Credit carrying it gave. A producer that sends
 * beyond its credit is refused at the first such buffer, every time; one
 * that names credit still on its way to it cannot, as it has not seen the
 * proof (a guess holds with odds of 2^-32, once: the first miss ends the
 * channel).
 *
 * Only the low 32 bits of the total travel with a buffer: the consumer
 * knows the total to within its credit outstanding (< 2^31).
 */
#ifndef FDX_RUNTIME_CREDIT_PROOF_H
#define FDX_RUNTIME_CREDIT_PROOF_H

#include <stdint.h>

/* A gate's key: random, never leaves its process. */
struct fdx__credit_key {
	uint64_t k[2];
};

/* The credit a buffer was sent under: the low 32 bits of a granted total, and its proof. */
struct fdx__credit_stamp {
	uint32_t total;
	uint32_t proof;
};

/* A fresh random key: 0, or -errno of getrandom(). */
int fdx__credit_key_init(struct fdx__credit_key *key);

/* The proof of channel ch of gate, at its opening, having been granted total. */
uint32_t fdx__credit_proof(const struct fdx__credit_key *key, uint32_t gate, uint32_t ch,
			   uint64_t opening, uint64_t total);

/* SipHash-2-4 of n 64-bit words: a message of 8n bytes, each word little-endian. */
uint64_t fdx__siphash24_words(const struct fdx__credit_key *key, const uint64_t *m, unsigned n);

/* A stamp as one word (the ledger keeps it so, read at once) and back. */
static inline uint64_t fdx__stamp_pack(struct fdx__credit_stamp st)
{
	return (uint64_t)st.total << 32 | st.proof;
}

static inline struct fdx__credit_stamp fdx__stamp_unpack(uint64_t w)
{
	struct fdx__credit_stamp st = {(uint32_t)(w >> 32), (uint32_t)w};

	return st;
}

#endif /* FDX_RUNTIME_CREDIT_PROOF_H */
