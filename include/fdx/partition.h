/* SPDX-License-Identifier: MIT */
/**
 * @file partition.h
 * The producer side of the data plane (Flink's CreditAwareTaskOutput): a
 * partition of N subpartitions, each feeding one input channel of a gate,
 * its buffers drawn from one LocalBufferPool.
 *
 * Records are length-prefixed (4 bytes, little-endian) and packed into
 * buffers; a record larger than what is left of a buffer continues in the
 * next. A buffer is queued on its subpartition when it is full, flushed, or
 * its buffer timeout strikes; the exchange's io_uring loop sends it only
 * while the channel has credit. When the pool is empty, emit blocks: that is
 * how backpressure reaches the source.
 *
 * Links (chosen when a subpartition is connected): `local` (the gate is in
 * the same fdx_exchange: buffers handed over in memory), `shm` (same host:
 * descriptors over a Unix socket, the region mapped read-only by the
 * consumer, nothing copied), `tcp` (header and payload over TCP, received
 * straight into the consumer's own segments).
 *
 * Threads: one task thread at a time calls connect, emit, broadcast,
 * reserve, commit, event, flush and finish on a partition;
 * fdx_partition_stats() and fdx_partition_channel_stats() may be called from
 * any thread; fdx_partition_destroy() must not race with any other call.
 */
#ifndef FDX_FDX_PARTITION_H
#define FDX_FDX_PARTITION_H

#include <stdint.h>

#include <fdx/common.h>
#include <fdx/exchange.h>
#include <fdx/local_buffer_pool.h>

FDX_BEGIN_DECLS

struct fdx_partition;

/** How a channel's data travels; see the file comment. */
enum fdx_link {
	FDX_LINK_AUTO = 0, /**< local if same exchange, shm if same host, else tcp */
	FDX_LINK_LOCAL = 1,
	FDX_LINK_SHM = 2,
	FDX_LINK_TCP = 3,
};

/** Event types; events travel in order with the data and need no credit. */
enum fdx_event_type {
	FDX_EVENT_WATERMARK = 1, /**< payload: by convention an 8-byte timestamp */
	FDX_EVENT_BARRIER = 2, /**< checkpoint barrier; payload: by convention the checkpoint id */
	FDX_EVENT_END_OF_PARTITION = 3, /**< the last item of a channel */
	FDX_EVENT_USER = 4, /**< anything, with a payload */
};

/** Event flag: overtake the data still queued on the subpartition (unaligned barrier). */
#define FDX_EVENT_PRIORITY 0x1u
/** Largest event payload. */
#define FDX_EVENT_PAYLOAD_MAX 65536u
/** Default largest record. */
#define FDX_RECORD_MAX_DEFAULT (64u << 20)
/** Largest record that can be configured. */
#define FDX_RECORD_MAX_LIMIT (1u << 30)
/** Default buffer timeout. */
#define FDX_BUFFER_TIMEOUT_DEFAULT_MS 100u
/** Subpartition argument meaning "every subpartition" (event, flush). */
#define FDX_ALL_SUBPARTITIONS UINT32_MAX

/** Option flag: buffer_timeout_ms is set (so that 0 can mean "flush after every record"). */
#define FDX_PARTITION_BUFFER_TIMEOUT 0x1u

/**
 * Options of fdx_partition_create(). Zero-initialise, set size = sizeof(struct
 * fdx_partition_opts), then the fields you need; zero means default.
 */
struct fdx_partition_opts {
	uint32_t size; /**< sizeof(struct fdx_partition_opts) */
	uint32_t n_subpartitions; /**< 1..65536 (required) */
	const char *partition_id; /**< sent to consumers (default "partition-N"); copied */
	uint32_t flags; /**< FDX_PARTITION_* */
	/**
	 * With FDX_PARTITION_BUFFER_TIMEOUT: flush a partly filled buffer this
	 * long after its first record (0 = after every record). Without it:
	 * FDX_BUFFER_TIMEOUT_DEFAULT_MS.
	 */
	uint32_t buffer_timeout_ms;
	uint32_t max_record; /**< largest record accepted (default 64 MiB, at most 1 GiB) */
	uint32_t pad;
};

/**
 * The smallest size of struct fdx_partition_opts accepted (fdx 0.1's). A
 * later version takes an older caller's smaller struct (missing fields:
 * defaults) and a newer caller's larger one whose extra fields are zero.
 */
#define FDX_PARTITION_OPTS_SIZE_V1 32u

/**
 * Create a partition writing into buffers of pool. Its segment size is the
 * pool's; records up to max_record may span any number of buffers.
 *
 * @param ex the exchange that sends its data (borrowed; must outlive it).
 * @param pool the LocalBufferPool of its buffers (borrowed; must outlive
 *   it). Use it for nothing else.
 * @param o options (borrowed; partition_id is copied).
 * @param out receives the partition, owned by the caller until
 *   fdx_partition_destroy(); set to NULL first, assigned only on success.
 * @return 0; -EINVAL if an argument is NULL, o->size is below
 *   FDX_PARTITION_OPTS_SIZE_V1 or sets a field this version does not know, n_subpartitions
 *   is 0 or above 65536, or max_record is above FDX_RECORD_MAX_LIMIT; -ENOMEM.
 */
FDX_API int fdx_partition_create(struct fdx_exchange *ex, struct fdx_lbp *pool,
				 const struct fdx_partition_opts *o, struct fdx_partition **out);

/**
 * Connect subpartition sub to input channel gate_channel of gate at the
 * consumer serving addr (the control stream to it is opened if needed), and
 * for shm/tcp the data socket too. Waits for the answer. Records emitted to
 * a subpartition before it is connected wait in its queue (bounded by the pool).
 *
 * @param addr the consumer's address (borrowed; copied). With FDX_LINK_AUTO,
 *   the exchange's own address, exactly as fdx_exchange_address() returns
 *   it, means local.
 * @param link FDX_LINK_AUTO, or a link to force.
 * @param timeout_ms the longest wait; <= 0 means 5000 (a local connect does
 *   not wait).
 * @return 0; -EINVAL if p or addr is NULL, sub is out of range or link unknown;
 *   -EISCONN if sub is connected already; -EOPNOTSUPP if the forced link is
 *   impossible (local to another exchange, shm to another host);
 *   local: -ENOENT if the exchange has no such gate or channel, -EBUSY if
 *   that input channel is open already;
 *   shm and tcp: every error of fdx_exchange_open_channel(); -ENOENT if the
 *   control stream failed before the channel was set up; the data socket's
 *   -errno from socket, connect, send or sendmsg (-EHOSTUNREACH if its host
 *   cannot be resolved, -EINVAL if the peer announced no usable endpoint);
 *   -ENOMEM.
 */
FDX_API int fdx_partition_connect(struct fdx_partition *p, uint32_t sub, const char *addr,
				  uint32_t gate, uint32_t gate_channel, uint32_t link,
				  int timeout_ms);

/**
 * Emit one record to subpartition sub: copy len bytes into its buffers (the
 * one copy of the data on shm), taking new buffers from the pool as needed.
 * The record is whole or not at all: if the wait for a buffer times out in
 * the middle of a spanning record, what was written of it is withdrawn (the
 * consumer never sees it) and nothing emitted before is lost.
 *
 * @param rec the record (borrowed; copied before this returns).
 * @param timeout_ms the longest wait for a buffer in total; < 0 waits forever, 0 never waits.
 * @return 0; -EINVAL if p is NULL, rec is NULL with len > 0, or sub is out
 *   of range; -EMSGSIZE if len is above the partition's max_record;
 *   -ETIMEDOUT if the pool stayed empty (backpressure) for timeout_ms
 *   (-EAGAIN with timeout_ms 0);
 *   -EPIPE if sub's channel failed (its peer is gone; see fdx_partition_channel_stats());
 *   -EBUSY if a reservation (fdx_partition_reserve()) is open;
 *   FDX_ECLOSED if the partition or its pool is being destroyed, or sub has
 *   ended (FDX_EVENT_END_OF_PARTITION).
 */
FDX_API int fdx_partition_emit(struct fdx_partition *p, uint32_t sub, const void *rec, uint32_t len,
			       int timeout_ms);

/**
 * Emit one record to every subpartition, in subpartition order, timeout_ms
 * bounding the whole call. Errors as fdx_partition_emit(); on an error (one
 * failed or ended subpartition is enough) the subpartitions before the one
 * that failed have the record, the rest do not, and *done (if not NULL) says
 * how many.
 *
 * @param done receives the number of subpartitions that have the record (may
 *   be NULL); set to 0 first.
 */
FDX_API int fdx_partition_broadcast(struct fdx_partition *p, const void *rec, uint32_t len,
				    int timeout_ms, uint32_t *done);

/**
 * Zero-copy emit, step 1: room for a record of up to len bytes, in place in
 * the subpartition's current buffer (a new one if it has too little room).
 * Write the record at *where, then call fdx_partition_commit(). Nothing else
 * may be emitted to any subpartition between the two (emit, broadcast,
 * reserve, event and finish return -EBUSY).
 *
 * @param where receives a pointer to len writable bytes in the pool's
 *   segment, valid until fdx_partition_commit().
 * @param timeout_ms the longest wait for a buffer, as for fdx_partition_emit().
 * @return 0 with *where set; -EINVAL if p or where is NULL or sub is out of
 *   range; -EMSGSIZE if len + 4 is above the segment size (emit it with
 *   fdx_partition_emit()) or len is above max_record; -EBUSY if a
 *   reservation is open already; -ETIMEDOUT, -EAGAIN, -EPIPE and FDX_ECLOSED
 *   as for fdx_partition_emit().
 */
FDX_API int fdx_partition_reserve(struct fdx_partition *p, uint32_t sub, uint32_t len, void **where,
				  int timeout_ms);

/**
 * Zero-copy emit, step 2: the record written at the reserved place is len
 * bytes long (at most what was reserved; 0 is a record of 0 bytes).
 *
 * @return 0; -EINVAL if p is NULL, sub has no reservation or len is above it
 *   (the reservation stays).
 */
FDX_API int fdx_partition_commit(struct fdx_partition *p, uint32_t sub, uint32_t len);

/**
 * Send an event on sub (or on every subpartition with FDX_ALL_SUBPARTITIONS).
 * The subpartition's partly filled buffer is flushed first, so the event
 * follows every record emitted before it; with FDX_EVENT_PRIORITY it
 * overtakes the buffers still waiting for credit instead. Events need no
 * credit and no buffer (the payload is copied). After FDX_EVENT_END_OF_PARTITION
 * nothing more may be emitted to that subpartition. With FDX_ALL_SUBPARTITIONS
 * every subpartition that can take the event gets it: a failed (-EPIPE) or
 * ended (FDX_ECLOSED) one is skipped and the first such error is returned
 * after the others got it; -ENOMEM stops the call.
 *
 * @param type one of enum fdx_event_type.
 * @param flags 0 or FDX_EVENT_PRIORITY (not with FDX_EVENT_END_OF_PARTITION).
 * @param payload len bytes (borrowed; copied), or NULL when len is 0.
 * @return 0; -EINVAL if p is NULL, sub is out of range, type is unknown,
 *   flags unknown, FDX_EVENT_PRIORITY is set on FDX_EVENT_END_OF_PARTITION,
 *   or payload is NULL with len > 0; -EMSGSIZE if len is above
 *   FDX_EVENT_PAYLOAD_MAX; -EBUSY if a reservation is open; -EPIPE if sub's
 *   channel failed; FDX_ECLOSED if sub has ended already or the partition is
 *   being destroyed; -ENOMEM.
 */
FDX_API int fdx_partition_event(struct fdx_partition *p, uint32_t sub, uint32_t type,
				uint32_t flags, const void *payload, uint32_t len);

/**
 * Queue the partly filled buffer of sub (or of every subpartition with
 * FDX_ALL_SUBPARTITIONS) now. The buffer keeps being filled afterwards: only
 * what was written so far goes. Never waits.
 *
 * @return 0; -EINVAL if p is NULL or sub is out of range.
 */
FDX_API int fdx_partition_flush(struct fdx_partition *p, uint32_t sub);

/**
 * End the partition: send FDX_EVENT_END_OF_PARTITION on every subpartition
 * that has not ended or failed, then wait until every buffer sent was handed
 * back by its consumer (their segments are then in the pool again). Waits by
 * yielding and short naps, not on a descriptor. Nothing more can be emitted
 * afterwards.
 *
 * @param timeout_ms the longest wait; < 0 waits forever, 0 checks once.
 * @return 0 (also if a consumer went away after the end, all handed back);
 *   -EINVAL if p is NULL; -EBUSY if a reservation is open (nothing is
 *   sent); -ENOMEM if an end could not be queued (call again);
 *   -ETIMEDOUT (buffers still out; call again);
 *   -EPIPE if a channel failed before its end went or with buffers it never
 *   handed back (those came back to the pool all the same).
 */
FDX_API int fdx_partition_finish(struct fdx_partition *p, int timeout_ms);

/**
 * Close every channel and free the partition; what was emitted and not yet
 * sent is dropped (fdx_partition_finish() first sends it all). Each channel
 * ends in order after its data (its consumer sees it closed once it has
 * taken the rest). Segments a consumer still holds (shm, local) or that are
 * still being written to a socket (tcp) are not recycled: they leave the
 * pool, withheld in its NetworkBufferPool (fdx_nbp_stats().withheld), and
 * their channel stays open until the consumer hands them back or is gone
 * (its process, gate or stream ends, or the channel fails: a failed
 * channel's buffers count as lost, as always), or this exchange is
 * destroyed; then they are free in the nbp again. The pool may be destroyed right after
 * this returns. NULL is a no-op.
 */
FDX_API void fdx_partition_destroy(struct fdx_partition *p);

/** Counters of one subpartition and its channel; see fdx_partition_channel_stats(). */
struct fdx_channel_stats {
	uint32_t size; /**< set by the caller: sizeof(struct fdx_channel_stats) */
	uint32_t link; /**< enum fdx_link in use; 0 while not connected */
	uint32_t credit; /**< credit available now */
	uint32_t backlog; /**< buffers queued, waiting for credit */
	uint32_t in_flight; /**< buffers sent that the consumer has not handed back */
	uint32_t max_in_flight; /**< the most ever in flight */
	uint64_t credits_granted; /**< initial credit plus every credit announced since */
	uint64_t buffers_sent; /**< never above credits_granted */
	uint64_t events_sent;
	uint64_t records; /**< records emitted */
	uint64_t bytes_sent; /**< buffer bytes sent */
	int32_t error; /**< 0, or why the channel failed */
	uint32_t pad;
	/**
	 * Credit round trip on shm and local links: from a buffer sent to its
	 * offset handed back with its credit and applied here, over every buffer
	 * since the channel connected (tcp: not measured, all 0). Percentiles
	 * come from a log-linear histogram: at most 1/8 above the true value.
	 */
	uint64_t rtt_count; /**< round trips measured */
	uint64_t rtt_p50_ns; /**< median */
	uint64_t rtt_p99_ns;
	uint64_t rtt_max_ns;
	/**
	 * Parts of the loop (shm and local links, 0 elsewhere): a credit
	 * update written by the consumer -> applied here (the control hop),
	 * and credit applied to a sender that had data waiting and no credit
	 * -> its next buffer out (the wake-up of the sender).
	 */
	uint64_t credit_wire_p50_ns;
	uint64_t credit_wire_p99_ns;
	uint64_t resume_p50_ns;
	uint64_t resume_p99_ns;
};

/** Counters of a partition; see fdx_partition_stats(). */
struct fdx_partition_stats {
	uint32_t size; /**< set by the caller: sizeof(struct fdx_partition_stats) */
	uint32_t n_subpartitions;
	uint64_t records; /**< records emitted (a broadcast counts once per subpartition) */
	uint64_t bytes; /**< record bytes emitted (without length prefixes) */
	uint64_t buffers_sent;
	uint64_t events_sent;
	/**
	 * Payload bytes the library copied after emit (tcp: through the socket;
	 * shm and local: none). The copy into the buffer at emit is not counted.
	 */
	uint64_t bytes_copied;
	uint64_t backpressured_ns; /**< time emit waited for a buffer (Flink's backPressuredTime) */
	uint32_t buffers_in_use; /**< segments of the pool this partition holds */
	uint32_t in_flight; /**< buffers sent, not yet handed back */
};

/**
 * Read the counters of subpartition sub. Any thread.
 *
 * @param st filled in; st->size must be set to sizeof(*st) (or a smaller,
 *   older size: only that many bytes are written).
 * @return 0; -EINVAL if p or st is NULL, st->size < 8 or sub is out of range.
 */
FDX_API int fdx_partition_channel_stats(struct fdx_partition *p, uint32_t sub,
					struct fdx_channel_stats *st);

/**
 * Read the partition's counters. Any thread.
 *
 * @param st filled in; st->size must be set to sizeof(*st) (or a smaller,
 *   older size: only that many bytes are written).
 * @return 0; -EINVAL if p or st is NULL or st->size < 8.
 */
FDX_API int fdx_partition_stats(struct fdx_partition *p, struct fdx_partition_stats *st);

FDX_END_DECLS

#endif /* FDX_FDX_PARTITION_H */
