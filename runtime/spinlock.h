/* SPDX-License-Identifier: MIT */
/*
 * A small test-and-test-and-set spinlock for critical sections of a few
 * instructions (a push or pop on a free stack). After a bounded number of
 * spins it yields the CPU, so a holder that was preempted on a 2-core machine
 * is not starved by its waiter.
 */
#ifndef FDX_RUNTIME_SPINLOCK_H
#define FDX_RUNTIME_SPINLOCK_H

#include <sched.h>

#include "atomic.h"

struct fdx__spinlock {
	_Atomic uint32_t locked;
};

static inline void fdx__spin_init(struct fdx__spinlock *l)
{
	atomic_init(&l->locked, 0);
}

static inline void fdx__spin_lock(struct fdx__spinlock *l)
{
	unsigned spins = 0;

	/* A1: the acquiring exchange pairs with R1 in fdx__spin_unlock(). */
	while (atomic_exchange_explicit(&l->locked, 1, memory_order_acquire)) {
		/* Relaxed: only a hint of when to retry the acquiring exchange. */
		while (fdx_load_relaxed_u32(&l->locked)) {
			if (++spins < 128)
				fdx_cpu_relax();
			else
				sched_yield();
		}
	}
}

static inline void fdx__spin_unlock(struct fdx__spinlock *l)
{
	/* R1: pairs with A1 in fdx__spin_lock(). */
	fdx_store_release_u32(&l->locked, 0);
}

#endif /* FDX_RUNTIME_SPINLOCK_H */
