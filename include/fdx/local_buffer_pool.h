/* SPDX-License-Identifier: MIT */
/**
 * @file local_buffer_pool.h
 * The LocalBufferPool (lbp): a quota of min..max segments of a
 * NetworkBufferPool for one output partition or one input gate. It hands out
 * buffers as {offset, capacity} in the shared region, never copies; a pointer
 * is derived only on request (fdx_lbp_ptr()).
 *
 * Ownership: a segment is owned by exactly one of the nbp, an lbp's free
 * cache, or the caller that requested it (until it recycles it). The min
 * segments are reserved at creation; up to max are borrowed from the nbp on
 * demand and returned to it in batches when they sit unused, or at once when
 * another pool starves for lack of free segments in the nbp.
 *
 * Availability: a thread can block in fdx_lbp_request() or fdx_lbp_wait(); an
 * event loop can poll fdx_lbp_event_fd(); a callback can be registered with
 * fdx_lbp_set_avail_cb(). The fd and the callback fire once, after a request
 * or wait found the pool empty, when a segment becomes available again; a
 * pool that never runs dry costs them nothing.
 */
#ifndef FDX_FDX_LOCAL_BUFFER_POOL_H
#define FDX_FDX_LOCAL_BUFFER_POOL_H

#include <stdint.h>

#include <fdx/common.h>
#include <fdx/network_buffer_pool.h>

FDX_BEGIN_DECLS

struct fdx_lbp;

/** A buffer: one segment lent to the caller. */
struct fdx_buf {
	uint64_t offset; /**< offset of the segment in the region */
	uint32_t capacity; /**< its size in bytes (the segment size) */
	uint32_t pad;
};

/**
 * Options of fdx_lbp_create(). Zero-initialise, set size = sizeof(struct
 * fdx_lbp_opts), then the fields.
 */
struct fdx_lbp_opts {
	uint32_t size; /**< sizeof(struct fdx_lbp_opts) */
	uint32_t min; /**< segments reserved at creation (may be 0) */
	uint32_t max; /**< most segments this pool may own (>= max(min, 1)) */
	uint32_t pad;
};

/**
 * The smallest size of struct fdx_lbp_opts accepted (fdx 0.1's). A later
 * version takes an older caller's smaller struct (missing fields: defaults)
 * and a newer caller's larger one whose extra fields are zero.
 */
#define FDX_LBP_OPTS_SIZE_V1 16u

/**
 * Called once when a segment becomes available after a request or wait found
 * the pool empty. Runs on the thread that made it available (one recycling,
 * or changing or destroying a pool of the same nbp; fdx's own threads too)
 * with the NetworkBufferPool's lock held: keep it short, do not block, and
 * call no fdx_lbp_ or fdx_nbp_ function from it (set a flag, write an
 * eventfd). lbp is the pool that has a segment again (borrowed).
 */
typedef void (*fdx_lbp_avail_fn)(void *ud, struct fdx_lbp *lbp);

/** Counters of a LocalBufferPool, filled by fdx_lbp_stats(). */
struct fdx_lbp_stats {
	uint32_t size; /**< set by the caller: sizeof(struct fdx_lbp_stats) */
	uint32_t min; /**< the reserved minimum */
	uint32_t max; /**< the current maximum */
	uint32_t owned; /**< segments this pool owns (in use + cached) */
	uint32_t in_use; /**< segments requested and not yet recycled */
	uint32_t cached; /**< free segments held by this pool */
	uint32_t available; /**< segments a request could get now: cached + borrowable */
	uint32_t waiting; /**< threads blocked in request/wait right now */
	uint64_t requests; /**< successful requests */
	uint64_t recycles; /**< successful recycles */
	uint64_t empty_requests; /**< requests that found the pool empty */
	uint64_t blocked_ns; /**< total time requesters spent blocked, in ns */
};

/**
 * Create a LocalBufferPool of nbp and reserve its min segments.
 *
 * @param nbp the NetworkBufferPool (borrowed; must outlive the lbp).
 * @param o options (borrowed).
 * @param out receives the pool, owned by the caller until fdx_lbp_destroy();
 *   set to NULL first, assigned only on success.
 * @return 0 on success;
 *   -EINVAL if an argument is NULL, o->size is below
 *     FDX_LBP_OPTS_SIZE_V1 or sets a field this version does not know, max is 0, min > max
 *     or max exceeds the nbp's segment count;
 *   FDX_ENOSEGMENTS if the nbp has fewer free segments than min, even after
 *     taking back the idle segments other pools borrowed (the log says how
 *     many were needed and how many were free);
 *   -ENOSPC if the nbp has created 2^30 - 1 pools already (ids are not reused);
 *   -ENOMEM if memory for the pool cannot be had (or another -errno from
 *     pthread_cond_init).
 * Thread-safe.
 */
FDX_API int fdx_lbp_create(struct fdx_nbp *nbp, const struct fdx_lbp_opts *o, struct fdx_lbp **out);

/**
 * Destroy the pool: threads blocked in fdx_lbp_request() or fdx_lbp_wait()
 * return FDX_ECLOSED, and every segment, cached or still in use, goes back to
 * the nbp (using a buffer after this is a bug). Closes the event fd; the
 * callback is not called any more. Destroy the partition or gate that uses
 * the pool first. Must not race with other calls on the same lbp other than
 * the blocked ones. NULL is a no-op.
 */
FDX_API void fdx_lbp_destroy(struct fdx_lbp *lbp);

/**
 * Take a buffer without blocking.
 *
 * @param lbp the pool.
 * @param out receives the buffer on success (unchanged otherwise); the caller
 *   owns the segment until it recycles it.
 * @return 0 on success; -EAGAIN if the pool is empty and cannot borrow more
 *   (it owns max segments or the nbp has none free): the expected
 *   back-pressure, after which the event fd and callback will fire;
 *   FDX_ECLOSED if the pool is being destroyed;
 *   -EINVAL if lbp or out is NULL.
 * Thread-safe; takes no global lock while the pool has cached segments.
 */
FDX_API int fdx_lbp_try_request(struct fdx_lbp *lbp, struct fdx_buf *out);

/**
 * Take a buffer, blocking until one is free, the timeout passes, or the pool
 * is destroyed. Time spent blocked is added to the blocked_ns counter.
 *
 * @param lbp the pool.
 * @param timeout_us the longest wait in microseconds; 0 does not block; < 0
 *   (or a value too large for the clock) waits without a bound.
 * @param out receives the buffer on success (unchanged otherwise); the caller
 *   owns the segment until it recycles it.
 * @return 0 on success; -ETIMEDOUT if the timeout passed (-EAGAIN when
 *   timeout_us is 0); FDX_ECLOSED if the pool was destroyed while waiting;
 *   -EINVAL if lbp or out is NULL.
 * Thread-safe.
 */
FDX_API int fdx_lbp_request(struct fdx_lbp *lbp, int64_t timeout_us, struct fdx_buf *out);

/**
 * Block until a request could succeed (a segment is cached or borrowable),
 * without taking it (another thread may take it first). Time spent blocked is
 * not counted as back-pressure.
 *
 * @param timeout_us as for fdx_lbp_request().
 * @return 0 when a segment is available; -ETIMEDOUT if the timeout passed
 *   (-EAGAIN when timeout_us is 0); FDX_ECLOSED if the pool was destroyed while
 *   waiting; -EINVAL if lbp is NULL.
 * Thread-safe.
 */
FDX_API int fdx_lbp_wait(struct fdx_lbp *lbp, int64_t timeout_us);

/**
 * Give a buffer back. It is validated first: a buffer that is not a segment
 * this pool lent out, or that is already free, is refused and nothing
 * changes. Wakes a blocked requester, fires the event fd and callback if a
 * request found the pool empty, and returns surplus segments to the nbp.
 *
 * @param lbp the pool.
 * @param offset the buffer's offset, as request returned it; the caller's
 *   ownership of the segment ends here.
 * @return 0 on success; FDX_ENOTOWNED if offset is not the start of a segment
 *   of the region or the segment is owned by someone else; FDX_EALREADYFREE
 *   if the segment is this pool's but already free (a double recycle);
 *   -EINVAL if lbp is NULL.
 * Thread-safe; takes no global lock in the common case. The availability
 * callback may run on this thread before it returns.
 */
FDX_API int fdx_lbp_recycle(struct fdx_lbp *lbp, uint64_t offset);

/**
 * A pointer to a buffer of this pool, derived from the region's base. Only
 * the buffer's current owner may use it. Thread-safe.
 *
 * @return the pointer to capacity bytes, valid until the nbp is destroyed, or
 *   NULL if lbp is NULL or offset is not the start of a segment of the region
 *   (any segment: ownership is not checked).
 */
FDX_API void *fdx_lbp_ptr(const struct fdx_lbp *lbp, uint64_t offset);

/**
 * Change the pool's maximum at run time. Growing lets it borrow more;
 * shrinking returns cached surplus segments to the nbp now and surplus
 * in-use segments as they are recycled.
 *
 * @return 0 on success; -EINVAL if lbp is NULL, max is 0, max < min, or max
 *   exceeds the nbp's segment count; -ENOMEM if the pool's larger cache
 *   cannot be allocated (nothing changes).
 * Thread-safe.
 */
FDX_API int fdx_lbp_set_max(struct fdx_lbp *lbp, uint32_t max);

/**
 * A file descriptor (an eventfd, owned by the pool) that becomes readable when
 * a segment becomes available after a request or wait found the pool empty.
 * Read 8 bytes from it to re-arm, then request until -EAGAIN. Created on the
 * first call; later calls return the same fd.
 *
 * @param lbp the pool.
 * @param fd receives the descriptor (non-blocking; owned by the pool: do not
 *   close it; valid until fdx_lbp_destroy()).
 * @return 0 on success; -EINVAL if an argument is NULL; -errno from eventfd.
 * Thread-safe.
 */
FDX_API int fdx_lbp_event_fd(struct fdx_lbp *lbp, int *fd);

/**
 * Register (or with fn NULL, remove) the availability callback; see
 * fdx_lbp_avail_fn for where it runs and what it may do.
 *
 * @param fn the callback; it must stay callable until it is replaced or the
 *   pool is destroyed.
 * @param ud passed to fn (borrowed).
 * @return 0 on success; -EINVAL if lbp is NULL.
 * Thread-safe: once this returns, the old callback is no longer called.
 */
FDX_API int fdx_lbp_set_avail_cb(struct fdx_lbp *lbp, fdx_lbp_avail_fn fn, void *ud);

/**
 * Read the pool's counters (a consistent snapshot).
 *
 * @param st filled in; st->size must be set to sizeof(*st) (or a smaller,
 *   older size: only that many bytes are written).
 * @return 0 on success; -EINVAL if lbp or st is NULL or st->size < 8.
 * Thread-safe.
 */
FDX_API int fdx_lbp_stats(struct fdx_lbp *lbp, struct fdx_lbp_stats *st);

FDX_END_DECLS

#endif /* FDX_FDX_LOCAL_BUFFER_POOL_H */
