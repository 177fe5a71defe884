/* SPDX-License-Identifier: MIT */
/* One producer channel's credit: see credit_ledger.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "clock.h"
#include "credit_ledger.h"

void fdx__ledger_init(struct fdx__credit_ledger *l, uint64_t initial)
{
	atomic_init(&l->granted, initial);
	atomic_init(&l->spent, 0);
	atomic_init(&l->returned, 0);
	atomic_init(&l->stamp, fdx__stamp_pack((struct fdx__credit_stamp){(uint32_t)initial, 0}));
	fdx__spin_init(&l->lock);
	l->set = NULL;
	l->n = l->cap = 0;
	l->took_back = 0;
	l->rtt = NULL;
}

void fdx__ledger_fini(struct fdx__credit_ledger *l)
{
	free(l->set);
	free(l->rtt);
	l->set = NULL;
	l->rtt = NULL;
	l->n = l->cap = 0;
}

int fdx__ledger_measure(struct fdx__credit_ledger *l)
{
	struct fdx__hist *h = l->rtt ? l->rtt : calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	fdx__spin_lock(&l->lock);
	l->rtt = h;
	fdx__spin_unlock(&l->lock);
	return 0;
}

static uint32_t slot(const struct fdx__credit_ledger *l, uint64_t off)
{
	/* Offsets are multiples of the segment size: mix the high bits down. */
	return (uint32_t)((off * 0x9e3779b97f4a7c15ull) >> 32) & (l->cap - 1);
}

/* Under lock, with room: 0, or -EEXIST. */
static int set_put(struct fdx__credit_ledger *l, uint64_t off, uint64_t t)
{
	uint32_t i;

	for (i = slot(l, off); l->set[i].off; i = (i + 1) & (l->cap - 1))
		if (l->set[i].off == off)
			return -EEXIST;
	l->set[i].off = off;
	l->set[i].t = t;
	l->n++;
	return 0;
}

/* Under lock: room for one more (at most half full). */
static int set_reserve(struct fdx__credit_ledger *l)
{
	uint32_t cap, oldcap = l->cap;
	struct fdx__ledger_ent *old = l->set, *a;

	if (2 * (l->n + 1) <= l->cap)
		return 0;
	cap = l->cap ? 2 * l->cap : 16;
	a = calloc(cap, sizeof(*a));
	if (!a)
		return -ENOMEM;
	l->set = a;
	l->cap = cap;
	l->n = 0;
	for (uint32_t i = 0; i < oldcap; i++)
		if (old[i].off)
			set_put(l, old[i].off, old[i].t);
	free(old);
	return 0;
}

/* Under lock: whether off is in flight. */
static int set_has(const struct fdx__credit_ledger *l, uint64_t off)
{
	if (!l->cap || off == 0)
		return 0;
	for (uint32_t i = slot(l, off); l->set[i].off; i = (i + 1) & (l->cap - 1))
		if (l->set[i].off == off)
			return 1;
	return 0;
}

/* Under lock: remove off (*t: when it was sent); 0, or -ENOENT if it was not in flight. */
static int set_take(struct fdx__credit_ledger *l, uint64_t off, uint64_t *t)
{
	uint32_t mask = l->cap - 1, i, j;

	if (!l->cap || off == 0)
		return -ENOENT;
	for (i = slot(l, off); l->set[i].off != off; i = (i + 1) & mask)
		if (!l->set[i].off)
			return -ENOENT;
	*t = l->set[i].t;
	/* Shift the rest of the cluster back over the hole. */
	for (j = (i + 1) & mask; l->set[j].off; j = (j + 1) & mask) {
		uint32_t home = slot(l, l->set[j].off);

		if (((j - home) & mask) >= ((j - i) & mask)) {
			l->set[i] = l->set[j];
			i = j;
		}
	}
	l->set[i].off = 0;
	l->n--;
	return 0;
}

int fdx__ledger_spend(struct fdx__credit_ledger *l, uint64_t off, uint64_t sent_ns)
{
	int err = 0;

	if (off) {
		uint64_t t = sent_ns;

		fdx__spin_lock(&l->lock);
		if (l->took_back)
			err = 1;
		else if ((err = set_reserve(l)) == 0)
			err = set_put(l, off, t);
		fdx__spin_unlock(&l->lock);
		if (err < 0)
			return err; /* in flight already, or not recorded: nothing is spent */
	}
	/* One writer: a plain increment, published relaxed (statistics, the overflow check). */
	atomic_store_explicit(&l->spent, atomic_load_explicit(&l->spent, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	return err;
}

void fdx__ledger_unspend(struct fdx__credit_ledger *l, uint64_t off)
{
	if (off) {
		fdx__spin_lock(&l->lock);
		uint64_t t;

		if (!l->took_back)
			set_take(l, off, &t);
		fdx__spin_unlock(&l->lock);
	}
	atomic_store_explicit(&l->spent, atomic_load_explicit(&l->spent, memory_order_relaxed) - 1,
			      memory_order_relaxed);
}

int fdx__ledger_holds(struct fdx__credit_ledger *l, uint64_t off)
{
	int found;

	fdx__spin_lock(&l->lock);
	found = set_has(l, off);
	fdx__spin_unlock(&l->lock);
	return found;
}

int fdx__ledger_grant(struct fdx__credit_ledger *l, uint32_t added, const uint64_t *offs,
		      uint32_t n, const struct fdx__credit_stamp *st, uint32_t *bad)
{
	uint64_t g, s, t, now = 0;
	uint32_t k;
	int err = 0;

	fdx__spin_lock(&l->lock);
	if (l->took_back) {
		fdx__spin_unlock(&l->lock);
		return 1;
	}
	g = atomic_load_explicit(&l->granted, memory_order_relaxed);
	s = atomic_load_explicit(&l->spent, memory_order_relaxed);
	if ((g > s ? g - s : 0) + added > UINT32_MAX) {
		fdx__spin_unlock(&l->lock);
		return -EOVERFLOW;
	}
	/* All or nothing: every offset is looked up before any is taken. */
	for (k = 0; k < n; k++)
		if (!set_has(l, offs[k]))
			break;
	if (k == n && n && l->rtt)
		now = fdx__now_ns();
	/*
	 * A refusal here needs an offset named twice in one grant: the peer
	 * lies and its stream fails; the round trips recorded meanwhile and the
	 * send times restamped below are statistics of a channel that ends.
	 */
	for (uint32_t i = 0; k == n && i < n; i++) {
		if (set_take(l, offs[i], &t) < 0) {
			/* Named twice in one grant: what it took is in flight again (no growth). */
			for (k = i; i--;)
				set_put(l, offs[i], fdx__now_ns());
			break;
		}
		if (now)
			fdx__hist_add(l->rtt, now > t ? now - t : 0);
	}
	if (k < n) {
		/* None of a refused grant counts. */
		*bad = k;
		err = -ENOENT;
	} else {
		if (n)
			atomic_fetch_add_explicit(&l->returned, n, memory_order_release);
		/* Before the credit it names: a sender that sees the credit sees its stamp. */
		if (st)
			atomic_store_explicit(&l->stamp, fdx__stamp_pack(*st),
					      memory_order_release);
		/* R1: pairs with the acquire in fdx__ledger_available(). */
		atomic_fetch_add_explicit(&l->granted, added, memory_order_release);
	}
	fdx__spin_unlock(&l->lock);
	return err;
}

uint32_t fdx__ledger_take_back(struct fdx__credit_ledger *l, uint64_t *offs, uint32_t max)
{
	uint32_t got = 0;

	fdx__spin_lock(&l->lock);
	l->took_back = 1;
	for (uint32_t i = 0; i < l->cap && got < max && l->n; i++)
		if (l->set[i].off) {
			offs[got++] = l->set[i].off;
			l->set[i].off = 0;
			l->n--;
		}
	fdx__spin_unlock(&l->lock);
	if (got)
		atomic_fetch_add_explicit(&l->returned, got, memory_order_release);
	return got;
}

uint32_t fdx__ledger_in_flight(struct fdx__credit_ledger *l)
{
	uint32_t n;

	fdx__spin_lock(&l->lock);
	n = l->n;
	fdx__spin_unlock(&l->lock);
	return n;
}
