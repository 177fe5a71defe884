/* SPDX-License-Identifier: MIT */
/*
 * The credit ledger of one producer channel: the credit its consumer granted
 * (initial included), the credit the sender spent (one per buffer) and the
 * offsets sent and not yet handed back. "Send only with credit" is
 * fdx__ledger_available() > 0; a consumer that hands back an offset that was
 * never sent, or grants past 2^32 unused credits, is refused here.
 *
 * Threads: one sender spends (the exchange's loop for a subpartition, the
 * owner for a plain channel of fdx_exchange_sent()); the credit side (the
 * completion-queue thread, or the loop for a local consumer) grants, takes
 * offsets back and, when the channel fails, takes every offset back at once.
 * granted and spent are atomics with one writer each; the set of offsets is
 * under the ledger's spinlock (a leaf lock: nothing is called while it is held).
 */
#ifndef FDX_RUNTIME_CREDIT_LEDGER_H
#define FDX_RUNTIME_CREDIT_LEDGER_H

#include <stdint.h>

#include "atomic.h"
#include "credit_proof.h"
#include "histogram.h"
#include "spinlock.h"

/* An offset in flight, and when it was sent. */
struct fdx__ledger_ent {
	uint64_t off; /* 0: the slot is empty */
	uint64_t t; /* ns, CLOCK_MONOTONIC */
};

struct fdx__credit_ledger {
	_Atomic uint64_t granted; /* credit granted in total (credit side, release) */
	_Atomic uint64_t spent; /* buffers sent in total (the sender, relaxed) */
	_Atomic uint64_t returned; /* buffers handed back in total */
	/*
	 * The credit a buffer is sent under (credit_proof.h), packed: set by
	 * the credit side before the credit it names is granted (release).
	 */
	_Atomic uint64_t stamp;
	struct fdx__spinlock lock;
	/* Under lock: offsets in flight (open addressing, at most half full). */
	struct fdx__ledger_ent *set;
	uint32_t n, cap;
	int took_back; /* every offset was taken back: late returns are ignored */
	/* Under lock: each offset's round trip, sent -> handed back (NULL: not measured). */
	struct fdx__hist *rtt;
};

/* A ledger with initial credit (its stamp: that total, unproven; see credit_proof.h). */
void fdx__ledger_init(struct fdx__credit_ledger *l, uint64_t initial);
/* Free the set (the ledger is dead: nobody else uses it any more). */
void fdx__ledger_fini(struct fdx__credit_ledger *l);

/*
 * Measure the round trip of each offset from now on (sent by spend, handed
 * back by grant) into l->rtt. 0 or -ENOMEM. Before the sender starts.
 */
int fdx__ledger_measure(struct fdx__credit_ledger *l);

/* The sender: credit it may spend now (acquire: pairs with the grant's release). */
static inline uint64_t fdx__ledger_available(struct fdx__credit_ledger *l)
{
	uint64_t g = atomic_load_explicit(&l->granted, memory_order_acquire);
	uint64_t s = atomic_load_explicit(&l->spent, memory_order_relaxed);

	return g > s ? g - s : 0;
}

/*
 * The sender: the stamp its next buffer goes with, read after
 * fdx__ledger_available() (acquire): at least as new as the credit it saw.
 */
static inline struct fdx__credit_stamp fdx__ledger_stamp(struct fdx__credit_ledger *l)
{
	return fdx__stamp_unpack(atomic_load_explicit(&l->stamp, memory_order_acquire));
}

/*
 * The sender: one credit spent on a buffer; off (not 0) is recorded as in
 * flight until handed back, sent at sent_ns (the round trip's start, if measured). 0; 1 if the offsets were taken back meanwhile
 * (the channel failed): off is the caller's to give back; -EEXIST if off is
 * in flight already, -ENOMEM if it could not be recorded (nothing spent:
 * do not send it).
 */
int fdx__ledger_spend(struct fdx__credit_ledger *l, uint64_t off, uint64_t sent_ns);

/* The sender: a spend (that returned 0) undone, the buffer did not go. */
void fdx__ledger_unspend(struct fdx__credit_ledger *l, uint64_t off);

/* Whether off is in flight. */
int fdx__ledger_holds(struct fdx__credit_ledger *l, uint64_t off);

/*
 * The credit side: added more credit, and the n offsets handed back; st (if
 * not NULL) the stamp buffers go with from now on, the granted total and
 * proof the consumer sent with it. All or nothing: 0; 1 if the ledger was
 * taken back (ignored, as the channel is over); -ENOENT with *bad set if
 * offs[*bad] was not in flight; -EOVERFLOW if the unused credit would pass
 * UINT32_MAX. Handed-back buffers are counted in returned.
 */
int fdx__ledger_grant(struct fdx__credit_ledger *l, uint32_t added, const uint64_t *offs,
		      uint32_t n, const struct fdx__credit_stamp *st, uint32_t *bad);

/*
 * The credit side, when the channel fails: up to max offsets in flight are
 * taken out into offs (call until it returns 0); from the first call on, the
 * ledger is taken back.
 */
uint32_t fdx__ledger_take_back(struct fdx__credit_ledger *l, uint64_t *offs, uint32_t max);

/* Offsets in flight (statistics, tests). */
uint32_t fdx__ledger_in_flight(struct fdx__credit_ledger *l);

#endif /* FDX_RUNTIME_CREDIT_LEDGER_H */
