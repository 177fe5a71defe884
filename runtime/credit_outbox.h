/* SPDX-License-Identifier: MIT */
/*
 * The credit outbox of one input channel: the one place where the credit a
 * consumer hands back (added credit and the offsets of released buffers)
 * waits until the transport can send it. The consumer adds (input_gate.c,
 * at each release); the transport takes everything at once when its control
 * stream is free to send (gRPC allows one send in flight per call), so what
 * accumulates meanwhile leaves as one CreditUpdate. Nothing else queues
 * credit.
 *
 * The outbox holds the credit of one opening of its channel at a time: the
 * consumer resets it for each new opening, and a take for another opening
 * gets nothing. Under its spinlock (a leaf lock).
 */
#ifndef FDX_RUNTIME_CREDIT_OUTBOX_H
#define FDX_RUNTIME_CREDIT_OUTBOX_H

#include <stdint.h>

#include "atomic.h"
#include "credit_proof.h"
#include "histogram.h"
#include "spinlock.h"

struct fdx__credit_outbox {
	struct fdx__spinlock lock;
	uint64_t opening; /* whose credit it holds */
	uint64_t added; /* credit not yet taken */
	uint64_t *offs; /* offsets not yet taken */
	uint32_t n, cap;
	/* Counted when credit is taken (it leaves): the bound the loop checks a producer against. */
	_Atomic uint64_t *granted_total;
	int counted; /* the opening it holds is checked against granted_total (a remote one) */
	/* Counted credit leaves with its total's proof (credit_proof.h): the gate's key and ids. */
	const struct fdx__credit_key *key;
	uint32_t gate, ch;
	/*
	 * Timed (wait not NULL): from the oldest credit waiting (t_first) to its
	 * take. A take cut short by its message's size leaves t_first as it
	 * was: the next take's wait is then an upper bound.
	 */
	struct fdx__hist *wait;
	uint64_t t_first;
};

/*
 * An empty outbox. A gate's channel counts its credit in granted_total and
 * proves it with key (channel ch of gate); granted_total and key NULL: an
 * outbox whose credit is neither counted nor proven (a plain channel's).
 */
void fdx__outbox_init(struct fdx__credit_outbox *ob, _Atomic uint64_t *granted_total,
		      const struct fdx__credit_key *key, uint32_t gate, uint32_t ch);
void fdx__outbox_fini(struct fdx__credit_outbox *ob);

/* From now on, each take records how long its oldest credit waited into wait (it outlives ob). */
void fdx__outbox_time(struct fdx__credit_outbox *ob, struct fdx__hist *wait);

/*
 * Drop what it holds; from now on it holds the credit of opening, counted in
 * granted_total if counted (a remote producer's opening: the loop checks it).
 */
void fdx__outbox_reset(struct fdx__credit_outbox *ob, uint64_t opening, int counted);

/*
 * Add credit and offsets for opening (dropped if the outbox holds another
 * opening's: 0 all the same). 0, -ENOMEM (nothing added) or -EOVERFLOW
 * (more than UINT32_MAX credits waiting).
 */
int fdx__outbox_add(struct fdx__credit_outbox *ob, uint64_t opening, uint32_t added,
		    const uint64_t *offs, uint32_t n);

/*
 * The transport: take the credit of opening and up to max of its offsets
 * into offs. Returns the number of offsets taken, *added the credit. What
 * did not fit stays; *more says whether anything did. *total (if not NULL):
 * the opening's granted total with this credit counted, *proof its proof;
 * both 0 when no counted credit left (the Credit then names no total).
 */
uint32_t fdx__outbox_take(struct fdx__credit_outbox *ob, uint64_t opening, uint32_t *added,
			  uint64_t *offs, uint32_t max, int *more, uint64_t *total,
			  uint32_t *proof);

/* Credit waiting (statistics). */
uint64_t fdx__outbox_waiting(struct fdx__credit_outbox *ob);

#endif /* FDX_RUNTIME_CREDIT_OUTBOX_H */
