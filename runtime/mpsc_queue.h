/* SPDX-License-Identifier: MIT */
/*
 * An intrusive multi-producer single-consumer queue (Vyukov's): producers
 * never block and never take a lock; the one consumer pops in FIFO order.
 * Used to hand what the completion-queue thread receives to the exchange's
 * owner, with an eventfd to wake it.
 *
 * Barriers: R1 in fdx__mpsc_push() (the node's contents, then its link)
 * pairs with A1 in fdx__mpsc_pop() (the link, then the contents).
 */
#ifndef FDX_RUNTIME_MPSC_QUEUE_H
#define FDX_RUNTIME_MPSC_QUEUE_H

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>

struct fdx__mpsc_node {
	_Atomic(struct fdx__mpsc_node *) next;
};

struct fdx__mpsc {
	_Atomic(struct fdx__mpsc_node *) head; /* producers swap themselves in here */
	struct fdx__mpsc_node *tail; /* consumer only */
	struct fdx__mpsc_node stub;
};

static inline void fdx__mpsc_init(struct fdx__mpsc *q)
{
	atomic_init(&q->stub.next, NULL);
	atomic_init(&q->head, &q->stub);
	q->tail = &q->stub;
}

static inline void fdx__mpsc_push(struct fdx__mpsc *q, struct fdx__mpsc_node *n)
{
	struct fdx__mpsc_node *prev;

	atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
	/* acq_rel: orders us against other producers swapping the head. */
	prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
	/* R1: publishes n's contents; pairs with A1 in fdx__mpsc_pop(). */
	atomic_store_explicit(&prev->next, n, memory_order_release);
}

/*
 * Pop the oldest node, or NULL if the queue is empty or a producer is half-way
 * through a push (its node then comes on a later call). Consumer only.
 */
static inline struct fdx__mpsc_node *fdx__mpsc_pop(struct fdx__mpsc *q)
{
	struct fdx__mpsc_node *tail = q->tail;
	/* A1: pairs with R1 in fdx__mpsc_push(). */
	struct fdx__mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);

	if (tail == &q->stub) {
		if (!next)
			return NULL;
		q->tail = next;
		tail = next;
		next = atomic_load_explicit(&tail->next, memory_order_acquire);
	}
	if (next) {
		q->tail = next;
		return tail;
	}
	if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
		return NULL;
	fdx__mpsc_push(q, &q->stub);
	next = atomic_load_explicit(&tail->next, memory_order_acquire);
	if (next) {
		q->tail = next;
		return tail;
	}
	return NULL;
}

/* Whether the queue may hold a node (or one is being pushed). Consumer only. */
static inline int fdx__mpsc_pop_peek(struct fdx__mpsc *q)
{
	return q->tail != &q->stub ||
	       atomic_load_explicit(&q->stub.next, memory_order_acquire) != NULL ||
	       atomic_load_explicit(&q->head, memory_order_acquire) != &q->stub;
}

/*
 * Pop like fdx__mpsc_pop(), but when a producer is half-way through a push
 * (the queue is not empty, yet the next link is not visible), wait for it:
 * what was pushed before is then never missed. The wait is a few
 * instructions of the producer's, bounded all the same. Consumer only.
 */
static inline struct fdx__mpsc_node *fdx__mpsc_pop_wait(struct fdx__mpsc *q)
{
	for (unsigned spins = 0; spins < (1u << 20); spins++) {
		struct fdx__mpsc_node *n = fdx__mpsc_pop(q);

		/* Acquire: a producer's swap of head (its acq_rel exchange). */
		if (n || (atomic_load_explicit(&q->head, memory_order_acquire) == q->tail &&
			  !atomic_load_explicit(&q->tail->next, memory_order_acquire)))
			return n;
		if (spins > 64)
			sched_yield();
	}
	return NULL;
}

#endif /* FDX_RUNTIME_MPSC_QUEUE_H */
