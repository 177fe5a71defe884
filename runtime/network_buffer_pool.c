/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/error.h>

#include "abi.h"
#include "local_buffer_pool.h"
#include "network_buffer_pool.h"
#include "opts.h"

FDX_API int fdx_nbp_create(const struct fdx_nbp_opts *o, struct fdx_nbp **out)
{
	struct fdx_region_opts ro;
	struct fdx_nbp_opts oo;
	struct fdx_nbp *nbp;
	uint64_t count;
	uint32_t seg_size;
	int err;

	if (out)
		*out = NULL;
	if (!out || fdx__opts_in(&oo, sizeof(oo), o, FDX_NBP_OPTS_SIZE_V1) < 0)
		return -EINVAL;
	o = &oo;
	if (o->hugepages > FDX_HUGEPAGE_NEVER)
		return -EINVAL;
	if ((o->seg_count && o->total_bytes) || o->batch > FDX_SEG_COUNT_MAX)
		return -EINVAL;
	seg_size = o->seg_size ? o->seg_size : FDX_SEG_SIZE_DEFAULT;
	if (o->total_bytes)
		count = (o->total_bytes + seg_size - 1) / seg_size;
	else
		count = o->seg_count ? o->seg_count : FDX_NBP_SEG_COUNT_DEFAULT;
	if (fdx__region_check_geometry(seg_size, count) < 0)
		return -EINVAL;

	nbp = calloc(1, sizeof(*nbp));
	if (!nbp)
		return -ENOMEM;
	fdx__log_init(&nbp->log, o->log_fn, o->log_ud, o->log_level);
	nbp->batch = o->batch ? o->batch : FDX_NBP_BATCH_DEFAULT;
	nbp->seg_count = (uint32_t)count;
	nbp->next_lbp_id = 1;
	atomic_init(&nbp->hungry, 0);

	memset(&ro, 0, sizeof(ro));
	ro.size = sizeof(ro);
	ro.seg_size = seg_size;
	ro.seg_count = (uint32_t)count;
	ro.hugepages = o->hugepages;
	ro.log_fn = o->log_fn;
	ro.log_ud = o->log_ud;
	ro.log_level = o->log_level;
	err = fdx_region_create(&ro, &nbp->region);
	if (err < 0)
		goto err_free;

	err = -ENOMEM;
	nbp->free = malloc(count * sizeof(*nbp->free));
	if (!nbp->free)
		goto err_region;
	nbp->seg_state = malloc(count * sizeof(*nbp->seg_state));
	if (!nbp->seg_state)
		goto err_free_stack;
	/* Lowest offsets on top of the stack, so a fresh pool hands them out first. */
	for (uint32_t i = 0; i < count; i++) {
		nbp->free[i] = (uint32_t)count - 1 - i;
		atomic_init(&nbp->seg_state[i], FDX_SEG_FREE);
	}
	nbp->nfree = (uint32_t)count;
	err = -pthread_mutex_init(&nbp->lock, NULL);
	if (err < 0)
		goto err_free_state;
	*out = nbp;
	return 0;

err_free_state:
	free(nbp->seg_state);
err_free_stack:
	free(nbp->free);
err_region:
	fdx_region_destroy(nbp->region);
err_free:
	free(nbp);
	return err;
}

FDX_API int fdx_nbp_destroy(struct fdx_nbp *nbp)
{
	uint32_t live, withheld, pinned;

	if (!nbp)
		return 0;
	pthread_mutex_lock(&nbp->lock);
	live = nbp->lbp_count;
	withheld = nbp->withheld;
	pinned = nbp->pinned;
	pthread_mutex_unlock(&nbp->lock);
	if (live) {
		FDX_LOG_ERR(&nbp->log, "nbp: cannot destroy: %u LocalBufferPools still alive",
			    live);
		return -EBUSY;
	}
	if (withheld || pinned) {
		FDX_LOG_ERR(&nbp->log,
			    "nbp: cannot destroy: %u segments of %u destroyed partitions are still "
			    "read by their consumers (destroy the exchange first)",
			    withheld, pinned);
		return -EBUSY;
	}
	pthread_mutex_destroy(&nbp->lock);
	free(nbp->seg_state);
	free(nbp->free);
	fdx_region_destroy(nbp->region);
	free(nbp);
	return 0;
}

FDX_API struct fdx_region *fdx_nbp_region(const struct fdx_nbp *nbp)
{
	return nbp ? nbp->region : NULL;
}

FDX_API int fdx_nbp_stats(struct fdx_nbp *nbp, struct fdx_nbp_stats *st)
{
	struct fdx_nbp_stats s;

	if (!nbp || !st || st->size < 8)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	s.seg_size = nbp->region->seg_size;
	s.seg_count = nbp->seg_count;
	s.page_size = nbp->region->page_size;
	s.hugetlb = (uint32_t)nbp->region->hugetlb;
	pthread_mutex_lock(&nbp->lock);
	s.free = nbp->nfree;
	s.reserved = nbp->reserved;
	s.lbp_count = nbp->lbp_count;
	s.withheld = nbp->withheld;
	pthread_mutex_unlock(&nbp->lock);
	fdx__stats_copy(st, &s, sizeof(s));
	return 0;
}

void fdx__nbp_wake_starved_locked(struct fdx_nbp *nbp)
{
	for (struct fdx_lbp *l = nbp->lbps; l && nbp->nfree; l = l->next)
		fdx__lbp_wake_if_starved_locked(l, 1);
	/* Relaxed: read and written under nbp->lock, or see H1 in reclaim below. */
	if (nbp->nfree)
		fdx_store_relaxed_u32(&nbp->hungry, 0);
}

uint32_t fdx__nbp_reclaim_idle_locked(struct fdx_nbp *nbp, const struct fdx_lbp *except)
{
	uint32_t n = 0;

	/*
	 * H1: set before visiting any lbp. A recycler that pushes into its cache
	 * after our visit took its spinlock after we released it, so it sees
	 * hungry (the spinlock orders it) and takes its slow path, which gives
	 * the segment back and wakes us; one that pushed before our visit had
	 * its segment reclaimed by the visit.
	 */
	fdx_store_relaxed_u32(&nbp->hungry, 1);
	for (struct fdx_lbp *l = nbp->lbps; l; l = l->next)
		if (l != except)
			n += fdx__lbp_give_back_idle_locked(l);
	return n;
}

int fdx__lbp_withhold(struct fdx_lbp *lbp, uint64_t offset)
{
	struct fdx_nbp *nbp = lbp->nbp;
	int64_t idx = fdx__region_seg_index(lbp->region, offset);
	int err = FDX_ENOTOWNED;

	if (idx < 0)
		return err;
	pthread_mutex_lock(&nbp->lock);
	fdx__spin_lock(&lbp->spin);
	if (fdx_load_relaxed_u32(&nbp->seg_state[idx]) == fdx__seg_lent(lbp->id)) {
		fdx_store_relaxed_u32(&nbp->seg_state[idx], FDX_SEG_WITHHELD);
		lbp->in_use--;
		lbp->owned--;
		nbp->withheld++;
		err = 0;
	}
	fdx__spin_unlock(&lbp->spin);
	pthread_mutex_unlock(&nbp->lock);
	return err;
}

int fdx__nbp_give_back(struct fdx_nbp *nbp, uint64_t offset)
{
	int64_t idx = fdx__region_seg_index(nbp->region, offset);
	int err = FDX_ENOTOWNED;

	if (idx < 0)
		return err;
	pthread_mutex_lock(&nbp->lock);
	if (fdx_load_relaxed_u32(&nbp->seg_state[idx]) == FDX_SEG_WITHHELD) {
		fdx_store_relaxed_u32(&nbp->seg_state[idx], FDX_SEG_FREE);
		nbp->free[nbp->nfree++] = (uint32_t)idx;
		nbp->withheld--;
		fdx__nbp_wake_starved_locked(nbp);
		err = 0;
	}
	pthread_mutex_unlock(&nbp->lock);
	return err;
}

void fdx__nbp_pin(struct fdx_nbp *nbp, int delta)
{
	pthread_mutex_lock(&nbp->lock);
	nbp->pinned = (uint32_t)((int64_t)nbp->pinned + delta);
	pthread_mutex_unlock(&nbp->lock);
}
