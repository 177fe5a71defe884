/* SPDX-License-Identifier: MIT */
/**
 * @file network_buffer_pool.h
 * The NetworkBufferPool (nbp): one per TaskManager. It owns the shared region
 * and its free segments, and lends them in batches to LocalBufferPools, whose
 * common path then needs no global lock.
 *
 * Threads: every function here is thread-safe, except that fdx_nbp_destroy()
 * must not race with any other use of the nbp or of its LocalBufferPools.
 */
#ifndef FDX_FDX_NETWORK_BUFFER_POOL_H
#define FDX_FDX_NETWORK_BUFFER_POOL_H

#include <stdint.h>

#include <fdx/common.h>
#include <fdx/log.h>
#include <fdx/region.h>

FDX_BEGIN_DECLS

struct fdx_nbp;

/** Default number of segments when neither seg_count nor total_bytes is given. */
#define FDX_NBP_SEG_COUNT_DEFAULT 2048u
/** Default number of segments moved between the nbp and a LocalBufferPool at once. */
#define FDX_NBP_BATCH_DEFAULT 16u

/**
 * Options of fdx_nbp_create(). Zero-initialise, set size = sizeof(struct
 * fdx_nbp_opts), then the fields you need; a zero field means its default.
 */
struct fdx_nbp_opts {
	uint32_t size; /**< sizeof(struct fdx_nbp_opts) */
	uint32_t seg_size; /**< power of two in [4 KiB, 1 MiB] (default 32 KiB) */
	uint32_t seg_count; /**< number of segments (default 2048), or 0 with total_bytes */
	uint32_t hugepages; /**< one of enum fdx_hugepage_policy (default prefer) */
	uint64_t total_bytes; /**< alternative to seg_count: total segment bytes, rounded up */
	uint32_t batch; /**< segments moved per nbp<->lbp transfer (default 16) */
	uint32_t log_level; /**< one of enum fdx_log_level; 0 = FDX_LOG_WARN */
	fdx_log_fn log_fn; /**< log sink for the nbp and its lbps, or NULL */
	void *log_ud; /**< passed to log_fn */
};

/**
 * The smallest size of struct fdx_nbp_opts accepted (fdx 0.1's). A later
 * version takes an older caller's smaller struct (missing fields: defaults)
 * and a newer caller's larger one whose extra fields are zero.
 */
#define FDX_NBP_OPTS_SIZE_V1 48u

/** Counters of a NetworkBufferPool, filled by fdx_nbp_stats(). */
struct fdx_nbp_stats {
	uint32_t size; /**< set by the caller: sizeof(struct fdx_nbp_stats) */
	uint32_t seg_size; /**< segment size in bytes */
	uint32_t seg_count; /**< segments in the region */
	uint32_t free; /**< segments held by the nbp, lent to no lbp */
	uint32_t reserved; /**< sum of the lbps' minimums */
	uint32_t lbp_count; /**< live LocalBufferPools */
	uint64_t page_size; /**< page size backing the region */
	uint32_t hugetlb; /**< 1 if hugetlb-backed */
	/**
	 * segments of destroyed partitions that consumers still read: in no
	 * pool until handed back or their consumer is gone
	 */
	uint32_t withheld;
};

/**
 * Create a NetworkBufferPool and its region (see fdx_region_create()).
 *
 * @param o options (borrowed; the log sink must stay callable until the pool
 *   is destroyed).
 * @param out receives the pool, owned by the caller until fdx_nbp_destroy();
 *   set to NULL first, assigned only on success.
 * @return 0 on success;
 *   -EINVAL if o or out is NULL, o->size is below
 *     FDX_NBP_OPTS_SIZE_V1 or sets a field this version does not know, seg_size is not a
 *     power of two in range, both seg_count and total_bytes are set, the segment count or
 *     batch is above FDX_SEG_COUNT_MAX, or the policy is unknown;
 *   -ENOMEM; FDX_ENOHUGEPAGES or another error of fdx_region_create().
 * Thread-safe.
 */
FDX_API int fdx_nbp_create(const struct fdx_nbp_opts *o, struct fdx_nbp **out);

/**
 * Destroy the pool and its region. Every LocalBufferPool must have been
 * destroyed first. NULL is a no-op. Must not race with any other call on the
 * pool or its LocalBufferPools.
 *
 * @return 0 on success (and for NULL); -EBUSY if LocalBufferPools are still
 *   alive, or a partition destroyed while its consumers held its buffers is
 *   not gone yet (withheld segments, or its channels being ended: destroy its
 *   exchange first, or try again once they were handed back), in which case
 *   nothing is changed (the log says how many).
 */
FDX_API int fdx_nbp_destroy(struct fdx_nbp *nbp);

/**
 * The region the pool owns (owned by the pool: do not destroy it; valid until
 * fdx_nbp_destroy()). Use it to send the region to a peer or to derive
 * pointers. Thread-safe.
 *
 * @return the region, or NULL if nbp is NULL.
 */
FDX_API struct fdx_region *fdx_nbp_region(const struct fdx_nbp *nbp);

/**
 * Read the pool's counters (a consistent snapshot).
 *
 * @param nbp the pool.
 * @param st filled in; st->size must be set to sizeof(*st) (or a smaller,
 *   older size: only that many bytes are written).
 * @return 0 on success; -EINVAL if nbp or st is NULL or st->size < 8.
 * Thread-safe.
 */
FDX_API int fdx_nbp_stats(struct fdx_nbp *nbp, struct fdx_nbp_stats *st);

FDX_END_DECLS

#endif /* FDX_FDX_NETWORK_BUFFER_POOL_H */
