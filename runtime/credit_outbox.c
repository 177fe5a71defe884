/* SPDX-License-Identifier: MIT */
/* An input channel's credit on its way to the producer: see credit_outbox.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "credit_outbox.h"

void fdx__outbox_init(struct fdx__credit_outbox *ob, _Atomic uint64_t *granted_total,
		      const struct fdx__credit_key *key, uint32_t gate, uint32_t ch)
{
	memset(ob, 0, sizeof(*ob));
	fdx__spin_init(&ob->lock);
	ob->granted_total = granted_total;
	ob->key = key;
	ob->gate = gate;
	ob->ch = ch;
}

void fdx__outbox_fini(struct fdx__credit_outbox *ob)
{
	free(ob->offs);
	ob->offs = NULL;
	ob->n = ob->cap = 0;
}

void fdx__outbox_time(struct fdx__credit_outbox *ob, struct fdx__hist *wait)
{
	fdx__spin_lock(&ob->lock);
	ob->wait = wait;
	fdx__spin_unlock(&ob->lock);
}

void fdx__outbox_reset(struct fdx__credit_outbox *ob, uint64_t opening, int counted)
{
	fdx__spin_lock(&ob->lock);
	ob->t_first = 0;
	ob->opening = opening;
	ob->counted = counted;
	ob->added = 0;
	ob->n = 0;
	fdx__spin_unlock(&ob->lock);
}

int fdx__outbox_add(struct fdx__credit_outbox *ob, uint64_t opening, uint32_t added,
		    const uint64_t *offs, uint32_t n)
{
	int err = 0;

	fdx__spin_lock(&ob->lock);
	if (ob->opening != opening)
		goto out; /* an opening that is over: its credit goes nowhere */
	if (ob->added + added > UINT32_MAX) {
		err = -EOVERFLOW;
		goto out;
	}
	if ((uint64_t)ob->n + n > ob->cap) {
		uint64_t cap = ob->cap ? ob->cap : 16;
		uint64_t *a;

		while (cap < (uint64_t)ob->n + n)
			cap *= 2;
		/* Grown under the lock: rare (the capacity only grows), and the lock is a leaf. */
		if (cap > UINT32_MAX || !(a = realloc(ob->offs, cap * sizeof(*a)))) {
			err = -ENOMEM;
			goto out;
		}
		ob->offs = a;
		ob->cap = (uint32_t)cap;
	}
	if (n)
		memcpy(ob->offs + ob->n, offs, (size_t)n * sizeof(*offs));
	ob->n += n;
	ob->added += added;
	if (ob->wait && !ob->t_first && (n || added))
		ob->t_first = fdx__now_ns();
out:
	fdx__spin_unlock(&ob->lock);
	return err;
}

uint32_t fdx__outbox_take(struct fdx__credit_outbox *ob, uint64_t opening, uint32_t *added,
			  uint64_t *offs, uint32_t max, int *more, uint64_t *total, uint32_t *proof)
{
	uint64_t t = 0;
	uint32_t k = 0;

	*added = 0;
	fdx__spin_lock(&ob->lock);
	if (ob->opening == opening) {
		k = ob->n < max ? ob->n : max;
		if (k)
			memcpy(offs, ob->offs, (size_t)k * sizeof(*offs));
		if (k && k < ob->n)
			memmove(ob->offs, ob->offs + k, (size_t)(ob->n - k) * sizeof(*offs));
		ob->n -= k;
		*added = (uint32_t)ob->added;
		ob->added = 0;
		/* R1: counted before it leaves; pairs with the loop's acquire in fdx__ichan_accept(). */
		if (*added && ob->counted && ob->granted_total)
			t = atomic_fetch_add_explicit(ob->granted_total, *added,
						      memory_order_release) +
			    *added;
	}
	if (total)
		*total = ob->key ? t : 0;
	if (proof)
		*proof =
			t && ob->key ? fdx__credit_proof(ob->key, ob->gate, ob->ch, opening, t) : 0;
	*more = ob->opening == opening && ob->n > 0;
	if (ob->opening == opening && ob->t_first && (k || *added)) {
		/* Under the lock: the one writer of wait at a time. */
		uint64_t now = fdx__now_ns();

		fdx__hist_add(ob->wait, now > ob->t_first ? now - ob->t_first : 0);
		if (!*more)
			ob->t_first = 0; /* what stays is as old as before */
	}
	fdx__spin_unlock(&ob->lock);
	return k;
}

uint64_t fdx__outbox_waiting(struct fdx__credit_outbox *ob)
{
	uint64_t v;

	fdx__spin_lock(&ob->lock);
	v = ob->added;
	fdx__spin_unlock(&ob->lock);
	return v;
}
