/* SPDX-License-Identifier: MIT */
/* LocalBufferPool internals; see network_buffer_pool.h for the locking rules. */
#ifndef FDX_RUNTIME_LOCAL_BUFFER_POOL_H
#define FDX_RUNTIME_LOCAL_BUFFER_POOL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdint.h>

#include <fdx/local_buffer_pool.h>

#include "network_buffer_pool.h"
#include "spinlock.h"

struct fdx_lbp {
	/* Hot: everything the request/recycle path touches, under spin. */
	alignas(FDX_CACHELINE) struct fdx__spinlock spin;
	uint32_t *stack; /* cached free segment indices */
	uint32_t ncached;
	uint32_t owned; /* in_use + ncached */
	uint32_t in_use;
	uint32_t max;
	uint32_t waiters; /* threads blocked in request or wait */
	uint32_t busy; /* threads in the slow path of request or wait (>= waiters) */
	uint32_t starved; /* a request found the pool empty since the last wake */
	uint32_t closed;
	uint64_t requests;
	uint64_t recycles;
	uint64_t empty_requests;
	uint32_t cap; /* entries in stack: the largest max so far */
	/* Read by the fast path, fixed at creation. */
	uint32_t id;
	uint32_t min;
	uint32_t keep; /* cached segments kept before returning a batch */
	const _Atomic uint32_t *hungry; /* &nbp->hungry, read on every recycle */
	_Atomic uint32_t *seg_state; /* the nbp's ownership table */
	const struct fdx_region *region;

	/* Cold: under nbp->lock, or for the slow paths. */
	alignas(FDX_CACHELINE) struct fdx_nbp *nbp;
	int efd; /* eventfd, -1 until asked for; under nbp->lock */
	fdx_lbp_avail_fn cb; /* under nbp->lock */
	void *cb_ud;
	pthread_cond_t cond; /* waits with nbp->lock */
	_Atomic uint64_t blocked_ns;
	struct fdx_lbp *prev, *next; /* in nbp->lbps, under nbp->lock */
};

/*
 * With nbp->lock held: if a request found lbp empty since the last wake (and,
 * when need_borrow is set, the lbp may still borrow from the nbp), wake its
 * blocked threads, its event fd and its callback.
 */
void fdx__lbp_wake_if_starved_locked(struct fdx_lbp *lbp, int need_borrow);

/* With nbp->lock held: give every cached segment of lbp above its min back; the count. */
uint32_t fdx__lbp_give_back_idle_locked(struct fdx_lbp *lbp);

#endif /* FDX_RUNTIME_LOCAL_BUFFER_POOL_H */
