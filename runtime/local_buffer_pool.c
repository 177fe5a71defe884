/* SPDX-License-Identifier: MIT */
/*
 * LocalBufferPool: a min..max quota of segments with a private free cache.
 * The common path (a cached segment to hand out, or a recycle with nobody
 * waiting) takes only the pool's spinlock. Everything else, borrowing from or
 * returning to the nbp, blocking, waking, goes through the slow paths below,
 * which take nbp->lock first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <fdx/error.h>

#include "abi.h"
#include "clock.h"
#include "local_buffer_pool.h"
#include "opts.h"

/* With spin held: hand out the top cached segment. */
static inline void take_cached(struct fdx_lbp *lbp, struct fdx_buf *out)
{
	uint32_t idx = lbp->stack[--lbp->ncached];

	/* Relaxed: the state is protected by lbp->spin (see network_buffer_pool.h). */
	fdx_store_relaxed_u32(&lbp->seg_state[idx], fdx__seg_lent(lbp->id));
	lbp->in_use++;
	lbp->requests++;
	out->offset = fdx__region_seg_offset(lbp->region, idx);
	out->capacity = lbp->region->seg_size;
	out->pad = 0;
}

/* With nbp->lock and spin held: borrow up to a batch from the nbp; the count moved. */
static uint32_t borrow_locked(struct fdx_lbp *lbp)
{
	struct fdx_nbp *nbp = lbp->nbp;
	uint32_t n = nbp->batch;

	if (lbp->max <= lbp->owned)
		return 0;
	if (n > lbp->max - lbp->owned)
		n = lbp->max - lbp->owned;
	if (n > nbp->nfree)
		n = nbp->nfree;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t idx = nbp->free[--nbp->nfree];

		fdx_store_relaxed_u32(&lbp->seg_state[idx], fdx__seg_cached(lbp->id));
		lbp->stack[lbp->ncached++] = idx;
	}
	lbp->owned += n;
	return n;
}

/* With nbp->lock and spin held: give n cached segments back to the nbp. */
static void give_back_locked(struct fdx_lbp *lbp, uint32_t n)
{
	struct fdx_nbp *nbp = lbp->nbp;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t idx = lbp->stack[--lbp->ncached];

		fdx_store_relaxed_u32(&lbp->seg_state[idx], FDX_SEG_FREE);
		nbp->free[nbp->nfree++] = idx;
	}
	lbp->owned -= n;
}

/* With spin held: cached segments above min, which the nbp may take back. */
static uint32_t idle_above_min(const struct fdx_lbp *lbp)
{
	uint32_t above_min = lbp->owned > lbp->min ? lbp->owned - lbp->min : 0;

	return lbp->ncached < above_min ? lbp->ncached : above_min;
}

/*
 * With nbp->lock and spin held: how many cached segments are surplus: above
 * max (after a shrink), borrowed ones idle beyond keep, or, while another
 * pool starves (hungry), every idle one above min.
 */
static uint32_t surplus_locked(const struct fdx_lbp *lbp)
{
	uint32_t n = 0, idle = idle_above_min(lbp);

	if (lbp->owned > lbp->max)
		n = lbp->owned - lbp->max;
	if (fdx_load_relaxed_u32(lbp->hungry))
		return idle > n ? idle : (n < lbp->ncached ? n : lbp->ncached);
	if (lbp->ncached > lbp->keep) {
		uint32_t trim = lbp->ncached - lbp->keep / 2;

		if (trim > idle)
			trim = idle;
		if (trim > n)
			n = trim;
	}
	return n < lbp->ncached ? n : lbp->ncached;
}

uint32_t fdx__lbp_give_back_idle_locked(struct fdx_lbp *lbp)
{
	uint32_t n;

	fdx__spin_lock(&lbp->spin);
	n = idle_above_min(lbp);
	if (n)
		give_back_locked(lbp, n);
	fdx__spin_unlock(&lbp->spin);
	return n;
}

void fdx__lbp_wake_if_starved_locked(struct fdx_lbp *lbp, int need_borrow)
{
	uint32_t starved, waiters;

	fdx__spin_lock(&lbp->spin);
	starved = lbp->starved;
	if (need_borrow && lbp->owned >= lbp->max)
		starved = 0;
	if (starved)
		lbp->starved = 0;
	waiters = lbp->waiters;
	fdx__spin_unlock(&lbp->spin);
	if (!starved)
		return;
	if (waiters)
		pthread_cond_broadcast(&lbp->cond);
	if (lbp->efd >= 0) {
		uint64_t one = 1;

		/* The counter cannot overflow in practice; EAGAIN would mean it is readable. */
		if (write(lbp->efd, &one, sizeof(one)) < 0)
			FDX_LOG_DEBUG(&lbp->nbp->log, "lbp %u: eventfd write failed", lbp->id);
	}
	if (lbp->cb)
		lbp->cb(lbp->cb_ud, lbp);
}

/* Slow part of recycle: nbp->lock, return surplus, wake whoever waits. */
static void recycle_slow(struct fdx_lbp *lbp)
{
	struct fdx_nbp *nbp = lbp->nbp;
	uint32_t n;

	pthread_mutex_lock(&nbp->lock);
	fdx__spin_lock(&lbp->spin);
	n = surplus_locked(lbp);
	if (n)
		give_back_locked(lbp, n);
	fdx__spin_unlock(&lbp->spin);
	fdx__lbp_wake_if_starved_locked(lbp, 0);
	if (n)
		fdx__nbp_wake_starved_locked(nbp);
	pthread_mutex_unlock(&nbp->lock);
}

FDX_API int fdx_lbp_create(struct fdx_nbp *nbp, const struct fdx_lbp_opts *o, struct fdx_lbp **out)
{
	struct fdx_lbp_opts oo;
	pthread_condattr_t ca;
	struct fdx_lbp *lbp;
	uint32_t nfree;
	int err;

	if (out)
		*out = NULL;
	if (!nbp || !out || fdx__opts_in(&oo, sizeof(oo), o, FDX_LBP_OPTS_SIZE_V1) < 0)
		return -EINVAL;
	o = &oo;
	if (o->max == 0 || o->min > o->max || o->max > nbp->seg_count)
		return -EINVAL;
	lbp = aligned_alloc(FDX_CACHELINE, sizeof(*lbp));
	if (!lbp)
		return -ENOMEM;
	memset(lbp, 0, sizeof(*lbp));
	fdx__spin_init(&lbp->spin);
	lbp->nbp = nbp;
	lbp->region = nbp->region;
	lbp->seg_state = nbp->seg_state;
	lbp->min = o->min;
	lbp->max = o->max;
	lbp->keep = 2 * nbp->batch;
	lbp->cap = o->max;
	lbp->hungry = &nbp->hungry;
	lbp->efd = -1;
	atomic_init(&lbp->blocked_ns, 0);
	err = -ENOMEM;
	lbp->stack = malloc(lbp->cap * sizeof(*lbp->stack));
	if (!lbp->stack)
		goto err_free;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	err = -pthread_cond_init(&lbp->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (err < 0)
		goto err_free_stack;

	pthread_mutex_lock(&nbp->lock);
	if (nbp->nfree < o->min)
		fdx__nbp_reclaim_idle_locked(nbp, NULL);
	nfree = nbp->nfree;
	if (nfree < o->min) {
		pthread_mutex_unlock(&nbp->lock);
		FDX_LOG_ERR(&nbp->log,
			    "lbp: cannot reserve its minimum: %u segments needed, %u free of %u",
			    o->min, nfree, nbp->seg_count);
		err = FDX_ENOSEGMENTS;
		goto err_cond;
	}
	if (nbp->next_lbp_id >= (1u << 30)) {
		pthread_mutex_unlock(&nbp->lock);
		err = -ENOSPC;
		goto err_cond;
	}
	lbp->id = nbp->next_lbp_id++;
	for (uint32_t i = 0; i < o->min; i++) {
		uint32_t idx = nbp->free[--nbp->nfree];

		fdx_store_relaxed_u32(&lbp->seg_state[idx], fdx__seg_cached(lbp->id));
		lbp->stack[lbp->ncached++] = idx;
	}
	lbp->owned = o->min;
	nbp->reserved += o->min;
	lbp->next = nbp->lbps;
	if (nbp->lbps)
		nbp->lbps->prev = lbp;
	nbp->lbps = lbp;
	nbp->lbp_count++;
	pthread_mutex_unlock(&nbp->lock);
	FDX_LOG_DEBUG(&nbp->log, "lbp %u: created, min %u max %u", lbp->id, o->min, o->max);
	*out = lbp;
	return 0;

err_cond:
	pthread_cond_destroy(&lbp->cond);
err_free_stack:
	free(lbp->stack);
err_free:
	free(lbp);
	return err;
}

FDX_API void fdx_lbp_destroy(struct fdx_lbp *lbp)
{
	struct fdx_nbp *nbp;
	uint32_t returned = 0;

	if (!lbp)
		return;
	nbp = lbp->nbp;
	pthread_mutex_lock(&nbp->lock);
	fdx__spin_lock(&lbp->spin);
	lbp->closed = 1;
	fdx__spin_unlock(&lbp->spin);
	pthread_cond_broadcast(&lbp->cond);
	/* Threads in the slow path see closed, leave, and the last one signals us. */
	for (;;) {
		uint32_t busy;

		fdx__spin_lock(&lbp->spin);
		busy = lbp->busy;
		fdx__spin_unlock(&lbp->spin);
		if (!busy)
			break;
		pthread_cond_wait(&lbp->cond, &nbp->lock);
	}
	/* Every segment this pool owns, cached or lent, goes back to the nbp. */
	for (uint32_t idx = 0; idx < nbp->seg_count && lbp->owned; idx++) {
		uint32_t st = fdx_load_relaxed_u32(&nbp->seg_state[idx]);

		if (st != fdx__seg_cached(lbp->id) && st != fdx__seg_lent(lbp->id))
			continue;
		fdx_store_relaxed_u32(&nbp->seg_state[idx], FDX_SEG_FREE);
		nbp->free[nbp->nfree++] = idx;
		lbp->owned--;
		returned++;
	}
	nbp->reserved -= lbp->min;
	if (lbp->prev)
		lbp->prev->next = lbp->next;
	else
		nbp->lbps = lbp->next;
	if (lbp->next)
		lbp->next->prev = lbp->prev;
	nbp->lbp_count--;
	if (lbp->in_use)
		FDX_LOG_WARN(&nbp->log, "lbp %u: destroyed with %u buffers still in use", lbp->id,
			     lbp->in_use);
	if (returned)
		fdx__nbp_wake_starved_locked(nbp);
	pthread_mutex_unlock(&nbp->lock);

	if (lbp->efd >= 0)
		close(lbp->efd);
	pthread_cond_destroy(&lbp->cond);
	free(lbp->stack);
	free(lbp);
}

/* The deadline for timeout_us from start; 0 means none (negative or beyond any clock). */
static uint64_t deadline_after(uint64_t start, int64_t timeout_us)
{
	if (timeout_us < 0 || (uint64_t)timeout_us > (UINT64_MAX - start) / 1000u)
		return 0;
	return start + (uint64_t)timeout_us * 1000u;
}

/*
 * The slow path of request and wait: nbp->lock held, borrow, reclaim or
 * block. With out NULL it only waits for availability. The caller counted
 * this thread in lbp->busy under the spinlock, so fdx_lbp_destroy() waits for
 * it even before it gets nbp->lock; it is uncounted here, under both locks.
 */
static int request_slow(struct fdx_lbp *lbp, int64_t timeout_us, struct fdx_buf *out)
{
	struct fdx_nbp *nbp = lbp->nbp;
	uint64_t start = 0, deadline = 0;
	struct timespec ts;
	int err = 0, counted = 0;

	pthread_mutex_lock(&nbp->lock);
	fdx__spin_lock(&lbp->spin);
	for (;;) {
		if (lbp->closed) {
			err = FDX_ECLOSED;
			break;
		}
		if (lbp->ncached || borrow_locked(lbp)) {
			if (out)
				take_cached(lbp, out);
			break;
		}
		if (lbp->owned < lbp->max && nbp->nfree == 0) {
			uint32_t got;

			/* The nbp is dry: take back what other pools hold idle. */
			fdx__spin_unlock(&lbp->spin);
			got = fdx__nbp_reclaim_idle_locked(nbp, lbp);
			fdx__spin_lock(&lbp->spin);
			if (got)
				continue;
		}
		lbp->starved = 1;
		if (!counted && out)
			lbp->empty_requests++;
		counted = 1;
		if (timeout_us == 0) {
			err = -EAGAIN;
			break;
		}
		if (!start) {
			start = fdx__now_ns();
			deadline = deadline_after(start, timeout_us);
		} else if (deadline && fdx__now_ns() >= deadline) {
			err = -ETIMEDOUT;
			break;
		}
		lbp->waiters++;
		fdx__spin_unlock(&lbp->spin);
		if (deadline) {
			ts.tv_sec = (time_t)(deadline / 1000000000u);
			ts.tv_nsec = (long)(deadline % 1000000000u);
			pthread_cond_timedwait(&lbp->cond, &nbp->lock, &ts);
		} else {
			pthread_cond_wait(&lbp->cond, &nbp->lock);
		}
		fdx__spin_lock(&lbp->spin);
		lbp->waiters--;
	}
	lbp->busy--;
	if (lbp->closed && lbp->busy == 0)
		pthread_cond_broadcast(&lbp->cond); /* lets fdx_lbp_destroy() go on */
	fdx__spin_unlock(&lbp->spin);
	/* Before unlocking: once unlocked, a closed pool may be freed by its destroyer. */
	if (start && out)
		fdx_add_relaxed_u64(&lbp->blocked_ns, fdx__now_ns() - start);
	pthread_mutex_unlock(&nbp->lock);
	return err;
}

FDX_API int fdx_lbp_request(struct fdx_lbp *lbp, int64_t timeout_us, struct fdx_buf *out)
{
	if (!lbp || !out)
		return -EINVAL;
	fdx__spin_lock(&lbp->spin);
	if (lbp->ncached && !lbp->closed) {
		take_cached(lbp, out);
		fdx__spin_unlock(&lbp->spin);
		return 0;
	}
	lbp->busy++;
	fdx__spin_unlock(&lbp->spin);
	return request_slow(lbp, timeout_us, out);
}

FDX_API int fdx_lbp_try_request(struct fdx_lbp *lbp, struct fdx_buf *out)
{
	return fdx_lbp_request(lbp, 0, out);
}

FDX_API int fdx_lbp_wait(struct fdx_lbp *lbp, int64_t timeout_us)
{
	if (!lbp)
		return -EINVAL;
	fdx__spin_lock(&lbp->spin);
	lbp->busy++;
	fdx__spin_unlock(&lbp->spin);
	return request_slow(lbp, timeout_us, NULL);
}

FDX_API int fdx_lbp_recycle(struct fdx_lbp *lbp, uint64_t offset)
{
	int64_t idx;
	uint32_t st;
	int slow;

	if (!lbp)
		return -EINVAL;
	idx = fdx__region_seg_index(lbp->region, offset);
	if (idx < 0)
		return FDX_ENOTOWNED;
	fdx__spin_lock(&lbp->spin);
	st = fdx_load_relaxed_u32(&lbp->seg_state[idx]);
	if (st != fdx__seg_lent(lbp->id)) {
		fdx__spin_unlock(&lbp->spin);
		return st == fdx__seg_cached(lbp->id) ? FDX_EALREADYFREE : FDX_ENOTOWNED;
	}
	fdx_store_relaxed_u32(&lbp->seg_state[idx], fdx__seg_cached(lbp->id));
	lbp->stack[lbp->ncached++] = (uint32_t)idx;
	lbp->in_use--;
	lbp->recycles++;
	/* Relaxed hungry: ordered by this spinlock, see H1 in fdx__nbp_reclaim_idle_locked(). */
	slow = lbp->starved || lbp->owned > lbp->max ||
	       (lbp->owned > lbp->min &&
		(lbp->ncached > lbp->keep || fdx_load_relaxed_u32(lbp->hungry)));
	fdx__spin_unlock(&lbp->spin);
	if (slow)
		recycle_slow(lbp);
	return 0;
}

FDX_API void *fdx_lbp_ptr(const struct fdx_lbp *lbp, uint64_t offset)
{
	if (!lbp || fdx__region_seg_index(lbp->region, offset) < 0)
		return NULL;
	return lbp->region->base + offset;
}

FDX_API int fdx_lbp_set_max(struct fdx_lbp *lbp, uint32_t max)
{
	uint32_t *grown = NULL, *old = NULL;
	struct fdx_nbp *nbp;
	uint32_t n;

	if (!lbp)
		return -EINVAL;
	nbp = lbp->nbp;
	if (max == 0 || max < lbp->min || max > nbp->seg_count)
		return -EINVAL;
	/* The cache can hold at most max segments: grow it before taking the locks. */
	if (max > lbp->cap) {
		grown = malloc(max * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
	}
	pthread_mutex_lock(&nbp->lock);
	fdx__spin_lock(&lbp->spin);
	if (grown && max > lbp->cap) {
		memcpy(grown, lbp->stack, lbp->ncached * sizeof(*grown));
		old = lbp->stack;
		lbp->stack = grown;
		lbp->cap = max;
		grown = NULL;
	}
	lbp->max = max;
	n = surplus_locked(lbp);
	if (n)
		give_back_locked(lbp, n);
	fdx__spin_unlock(&lbp->spin);
	/* A larger max may let a starved pool borrow again. */
	fdx__lbp_wake_if_starved_locked(lbp, 1);
	if (n)
		fdx__nbp_wake_starved_locked(nbp);
	pthread_mutex_unlock(&nbp->lock);
	free(old);
	free(grown); /* another set_max grew it meanwhile */
	return 0;
}

FDX_API int fdx_lbp_event_fd(struct fdx_lbp *lbp, int *fd)
{
	int err = 0;

	if (!lbp || !fd)
		return -EINVAL;
	pthread_mutex_lock(&lbp->nbp->lock);
	if (lbp->efd < 0) {
		lbp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (lbp->efd < 0)
			err = -errno;
	}
	if (!err)
		*fd = lbp->efd;
	pthread_mutex_unlock(&lbp->nbp->lock);
	return err;
}

FDX_API int fdx_lbp_set_avail_cb(struct fdx_lbp *lbp, fdx_lbp_avail_fn fn, void *ud)
{
	if (!lbp)
		return -EINVAL;
	pthread_mutex_lock(&lbp->nbp->lock);
	lbp->cb = fn;
	lbp->cb_ud = ud;
	pthread_mutex_unlock(&lbp->nbp->lock);
	return 0;
}

FDX_API int fdx_lbp_stats(struct fdx_lbp *lbp, struct fdx_lbp_stats *st)
{
	struct fdx_lbp_stats s;
	uint32_t borrowable = 0;

	if (!lbp || !st || st->size < 8)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	pthread_mutex_lock(&lbp->nbp->lock);
	fdx__spin_lock(&lbp->spin);
	s.min = lbp->min;
	s.max = lbp->max;
	s.owned = lbp->owned;
	s.in_use = lbp->in_use;
	s.cached = lbp->ncached;
	if (lbp->max > lbp->owned)
		borrowable = lbp->max - lbp->owned;
	if (borrowable > lbp->nbp->nfree)
		borrowable = lbp->nbp->nfree;
	s.available = lbp->ncached + borrowable;
	s.waiting = lbp->waiters;
	s.requests = lbp->requests;
	s.recycles = lbp->recycles;
	s.empty_requests = lbp->empty_requests;
	fdx__spin_unlock(&lbp->spin);
	pthread_mutex_unlock(&lbp->nbp->lock);
	s.blocked_ns = fdx_load_relaxed_u64(&lbp->blocked_ns);
	fdx__stats_copy(st, &s, sizeof(s));
	return 0;
}
