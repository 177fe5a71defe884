/* SPDX-License-Identifier: MIT */
/*
 * NetworkBufferPool internals, shared with local_buffer_pool.c.
 *
 * Locking: nbp->lock (a mutex) protects the nbp's free stack, its list of
 * lbps and every lbp's availability callback and event fd; it is also the
 * mutex of every lbp's condition variable, so blocking waits and the wake-ups
 * that cross pools have one order. An lbp's spinlock protects its own free
 * cache and counters. Order: nbp->lock before an lbp's spinlock; never the
 * reverse. The common request/recycle path takes only the lbp's spinlock.
 *
 * Ownership of each segment is recorded in seg_state (O4): 0 = free in the
 * nbp; (id << 1) = cached by lbp id; (id << 1) | 1 = lent by lbp id to its
 * caller; 1 (lbp ids start at 1) = withheld: a destroyed partition's segment
 * a consumer still reads, in no pool until fdx__nbp_give_back(). Lent ->
 * withheld takes the lbp's spinlock and nbp->lock; withheld -> free takes
 * nbp->lock alone (no lbp owns it). A segment's state changes only under the spinlock of the lbp that
 * owns it (and the nbp lock too when it moves between nbp and lbp), so an lbp
 * reading its own segments' state under its spinlock sees a stable value;
 * other segments may change under it, hence the relaxed atomics.
 *
 * Idle borrowed segments: an lbp keeps up to 2 * batch cached segments above
 * its min so that its common path need not visit the nbp. When the nbp runs
 * dry and an lbp below its max wants more, it sets hungry and reclaims every
 * other lbp's idle segments above their min; while hungry is set, every
 * recycle gives its pool's idle segments above min back and wakes the starved.
 */
#ifndef FDX_RUNTIME_NETWORK_BUFFER_POOL_H
#define FDX_RUNTIME_NETWORK_BUFFER_POOL_H

#include <pthread.h>
#include <stdint.h>

#include <fdx/network_buffer_pool.h>

#include "atomic.h"
#include "log.h"
#include "region.h"

struct fdx_lbp;

struct fdx_nbp {
	struct fdx_region *region;
	struct fdx__log log;
	uint32_t batch;
	uint32_t seg_count;
	_Atomic uint32_t hungry; /* an lbp starves for lack of nbp segments; see above */
	_Atomic uint32_t *seg_state;

	pthread_mutex_t lock;
	uint32_t *free; /* stack of free segment indices */
	uint32_t nfree;
	uint32_t reserved; /* sum of the lbps' minimums */
	uint32_t lbp_count;
	uint32_t withheld; /* segments withheld (FDX_SEG_WITHHELD) */
	uint32_t pinned; /* destroyed partitions not yet released (fdx__nbp_pin()) */
	uint32_t next_lbp_id;
	struct fdx_lbp *lbps; /* list of live lbps, through lbp->next/prev */
};

#define FDX_SEG_FREE 0u
#define FDX_SEG_WITHHELD 1u

static inline uint32_t fdx__seg_cached(uint32_t lbp_id)
{
	return lbp_id << 1;
}

static inline uint32_t fdx__seg_lent(uint32_t lbp_id)
{
	return (lbp_id << 1) | 1u;
}

/*
 * Segment offset, lent by lbp, leaves it: withheld in the nbp (in no pool,
 * not free) until fdx__nbp_give_back(). lbp may then be destroyed. 0, or
 * FDX_ENOTOWNED if lbp does not lend it (any more: recycled meanwhile).
 */
int fdx__lbp_withhold(struct fdx_lbp *lbp, uint64_t offset);

/* A withheld segment is free again. 0, or FDX_ENOTOWNED if it is not withheld. */
int fdx__nbp_give_back(struct fdx_nbp *nbp, uint64_t offset);

/*
 * A destroyed partition that still reads the nbp's region (+1) or no longer
 * (-1): fdx_nbp_destroy() refuses while any does.
 */
void fdx__nbp_pin(struct fdx_nbp *nbp, int delta);

/*
 * With nbp->lock held: notify every lbp that waits for the nbp to have free
 * segments; clears hungry once the nbp has some.
 */
void fdx__nbp_wake_starved_locked(struct fdx_nbp *nbp);

/*
 * With nbp->lock held and no lbp spinlock: set hungry, then take back every
 * idle segment above min from every lbp but except. Returns the count.
 */
uint32_t fdx__nbp_reclaim_idle_locked(struct fdx_nbp *nbp, const struct fdx_lbp *except);

#endif /* FDX_RUNTIME_NETWORK_BUFFER_POOL_H */
