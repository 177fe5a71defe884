/* SPDX-License-Identifier: MIT */
/**
 * @file gate.h
 * The consumer side of the data plane: an input gate of N input channels,
 * each fed by one producer's subpartition (see partition.h).
 *
 * fdx_gate_next() hands out views, one buffer or one event each, from any
 * channel in arrival order (a channel that keeps sending cannot starve the
 * others: credit bounds what it has queued); priority events come first.
 * Iterate a buffer's records with fdx_gate_next_record(), then release the
 * view: its credit goes back to the producer (with, on shm, the offset of the
 * producer's buffer).
 *
 * Credits as in Flink: each channel has exclusive credits, announced when it
 * opens; the gate has floating credits, handed to channels whose announced
 * backlog exceeds the credit they have, and taken back when their backlog is
 * gone. A channel whose link reads the producer's segments in place (shm,
 * local) costs the gate no memory per credit: once its first buffer or
 * backlog shows the link it has the in-place credit instead (default 20) and
 * takes no floating credit. Credit goes back in batches (a quarter of what
 * the open channels may hold), at once when a producer has none left, has no
 * more left than is owed to it, or its channel ended, and otherwise 100 us
 * after fdx_gate_next() first found nothing to return while owing some. A
 * producer that sends beyond its credit, or anything malformed, fails its
 * connection with a clear error.
 *
 * A buffer view is a whole buffer of the producer's, or the part of one that
 * a flush or the buffer timeout sent (the rest comes in later views).
 *
 * On shm a view points into the producer's region, mapped read-only: nothing
 * is copied. The only copy on the consumer side is the reassembly of a record
 * that spans buffers.
 *
 * Threads: one thread at a time calls next/next_record/release on a gate;
 * fdx_gate_stats(), fdx_gate_channel_stats() and fdx_gate_event_fd() may be
 * called from any thread; fdx_gate_destroy() must not race with any other
 * call.
 */
#ifndef FDX_FDX_GATE_H
#define FDX_FDX_GATE_H

#include <stddef.h>
#include <stdint.h>

#include <fdx/common.h>
#include <fdx/exchange.h>
#include <fdx/local_buffer_pool.h>
#include <fdx/partition.h>

FDX_BEGIN_DECLS

struct fdx_gate;

/** Default exclusive credits per input channel (Flink's buffers-per-channel). */
#define FDX_EXCLUSIVE_CREDITS_DEFAULT 2u
/** Default floating credits per gate (Flink's floating-buffers-per-gate). */
#define FDX_FLOATING_CREDITS_DEFAULT 8u
/**
 * Default credit per input channel whose link reads the producer's segments
 * in place (shm, local): Flink's per-channel budget of 20 segments (10
 * output buffers + 2 exclusive + 8 floating input buffers). Such a credit
 * costs this gate no memory: the producer's pool is the whole budget.
 */
#define FDX_INPLACE_CREDITS_DEFAULT 20u
/** Largest inplace_credits. */
#define FDX_INPLACE_CREDITS_MAX 65536u
/** Option value meaning "none" for exclusive_credits, floating_credits or inplace_credits. */
#define FDX_CREDITS_NONE UINT32_MAX

/**
 * Options of fdx_gate_create(). Zero-initialise, set size = sizeof(struct
 * fdx_gate_opts), then the fields you need; zero means default.
 */
struct fdx_gate_opts {
	uint32_t size; /**< sizeof(struct fdx_gate_opts) */
	uint32_t gate; /**< the gate's id, as producers name it */
	uint32_t n_channels; /**< 1..65536 (required) */
	uint32_t exclusive_credits; /**< per channel (default 2; FDX_CREDITS_NONE for 0) */
	uint32_t floating_credits; /**< per gate (default 8; FDX_CREDITS_NONE for 0) */
	uint32_t max_record; /**< largest record reassembled (default 64 MiB, at most 1 GiB) */
	/**
	 * Credit of a channel whose producer's link reads in place (shm,
	 * local), in place of its exclusive credit, once its first buffer or
	 * backlog shows the link (the answer to the open carries the exclusive
	 * credit; the rest follows as an update). Such a channel takes no
	 * floating credit: floating credits are segments of pool, which it does
	 * not use. Default FDX_INPLACE_CREDITS_DEFAULT; FDX_CREDITS_NONE, or a
	 * value not above exclusive_credits: such channels are credited as tcp
	 * ones (exclusive + floating). A producer's pool smaller than this
	 * bounds its channel first. At most FDX_INPLACE_CREDITS_MAX.
	 */
	uint32_t inplace_credits;
	uint32_t pad;
};

/** Size of struct fdx_gate_opts before inplace_credits (fdx 0.1): still accepted. */
#define FDX_GATE_OPTS_SIZE_V1 24u

/**
 * Create an input gate and register it with the exchange: producers may then
 * connect to its channels.
 *
 * @param ex the exchange (borrowed; must outlive the gate).
 * @param pool the segments tcp channels receive into (borrowed; must
 *   outlive the gate), or NULL if no channel will be tcp. Its max must be at
 *   least n_channels * exclusive + floating: each credit is one of its
 *   segments (give it that min too, so that no other pool can take them: a
 *   tcp frame that finds no segment fails its connection).
 * @param o options (borrowed).
 * @param out receives the gate, owned by the caller until fdx_gate_destroy();
 *   set to NULL first, assigned only on success.
 * @return 0; -EINVAL if ex, o or out is NULL, o->size is below
 *   FDX_GATE_OPTS_SIZE_V1 (a smaller struct of an older caller gets the
 *   defaults of the fields it lacks) or sets a field this version does not
 *   know (a newer caller's), inplace_credits is above
 *   FDX_INPLACE_CREDITS_MAX, n_channels is 0 or above 65536, max_record is above
 *   FDX_RECORD_MAX_LIMIT, the credits are 0 or above 2^32 - 1 in total, one
 *   channel could hold 2^31 or more (exclusive + floating + in place), or
 *   pool is too small (the log says so); -EEXIST if the exchange has that
 *   gate already (from fdx_gate_create() or fdx_exchange_add_gate());
 *   -ENOMEM; -errno from eventfd.
 */
FDX_API int fdx_gate_create(struct fdx_exchange *ex, struct fdx_lbp *pool,
			    const struct fdx_gate_opts *o, struct fdx_gate **out);

/**
 * Unregister and free the gate; every view must have been released (their
 * data and messages die with it). Peers' channels to it fail, unless they
 * had ended; buffers still queued are handed back (a local producer's at
 * once, a remote one's with its stream). Closes the event fd. Destroy the
 * gate before its pool and exchange. NULL is a no-op.
 */
FDX_API void fdx_gate_destroy(struct fdx_gate *g);

/** What a view holds. */
enum fdx_view_kind {
	FDX_VIEW_BUFFER = 1, /**< a buffer of records: fdx_gate_next_record() */
	FDX_VIEW_EVENT = 2, /**< an event: event_type, event_flags, data/len = payload */
	FDX_VIEW_FAILED = 3, /**< the channel failed: error and message say why */
};

/**
 * One buffer or event of one channel, filled by fdx_gate_next(). The caller
 * allocates it; fdx_gate_next() passes its size as the caller was built, so
 * fields are only ever appended: a view of an older layout gets the fields
 * it has, a newer caller's fields this version does not know are zeroed.
 */
struct fdx_view {
	uint32_t kind; /**< enum fdx_view_kind */
	uint32_t channel; /**< the input channel, 0..n_channels-1 */
	const void *data; /**< the bytes (read-only), valid until released */
	uint32_t len; /**< how many */
	uint32_t event_type; /**< FDX_VIEW_EVENT: one of enum fdx_event_type */
	uint32_t event_flags; /**< FDX_VIEW_EVENT: FDX_EVENT_PRIORITY or 0 */
	int32_t error; /**< FDX_VIEW_FAILED: a negative fdx return code */
	uint64_t seq; /**< position of the item in its channel, from 0 */
	const char *message; /**< FDX_VIEW_FAILED: the reason, naming the peer; until released */
	void *priv[2]; /**< the library's; do not touch */
	uint32_t cursor; /**< the library's: iteration position in data */
	uint32_t pad;
};

/** sizeof(struct fdx_view) as fdx 0.1 laid it out: the smallest view taken. */
#define FDX_VIEW_SIZE_V1 72u

/**
 * Take the next view: call it as fdx_gate_next(g, v, timeout_ms), which
 * passes sizeof(*v). Priority events first, then items in arrival order.
 * With timeout_ms 0 and nothing pending, arms fdx_gate_event_fd(). With
 * timeout_ms > 0 it spins for a few microseconds before it sleeps.
 *
 * @param v filled in (borrowed); the caller keeps it, unchanged, until it
 *   passes it to fdx_gate_release(). Every view, of any kind, must be
 *   released. Through the macro, v must point to a view type (not void).
 * @param view_size the size of *v as the caller was built; bytes past the
 *   fields this version knows are zeroed.
 * @param timeout_ms the longest wait; < 0 waits forever, 0 never waits.
 * @return 0 with *v filled; -EINVAL if g or v is NULL or view_size is below
 *   FDX_VIEW_SIZE_V1 (*v untouched); -EAGAIN if nothing came within
 *   timeout_ms (0: nothing pending); FDX_ECLOSED once the gate is being
 *   destroyed.
 */
FDX_API int fdx_gate_next_view(struct fdx_gate *g, struct fdx_view *v, size_t view_size,
			       int timeout_ms);

/** fdx_gate_next_view() for a view of this header's layout (also the symbol fdx 0.1 callers use). */
FDX_API int(fdx_gate_next)(struct fdx_gate *g, struct fdx_view *v, int timeout_ms);
#define fdx_gate_next(g, v, timeout_ms) fdx_gate_next_view((g), (v), sizeof(*(v)), (timeout_ms))

/**
 * Step through the records of a buffer view, in order. A record that began
 * in an earlier buffer of the channel is completed from this one (copied into
 * the channel's reassembly buffer: valid until the next call on that channel);
 * other records point into the view. Views of one channel must be iterated in
 * the order they were taken.
 *
 * @param rec receives a pointer to the record (read-only), valid until the
 *   view is released, or, for a reassembled record, until the next call on
 *   a view of that channel.
 * @param len receives its length in bytes.
 * @return 1 with *rec and *len set; 0 when the view has no more complete
 *   records (a record continuing in the next buffer was taken in);
 *   -EINVAL if an argument is NULL, v is not an unreleased buffer view of g
 *   or v->cursor is past its data;
 *   FDX_EPROTO if the buffer ends inside a record header, or a record is
 *   above max_record: the rest of the view is skipped and the log says how;
 *   from a shm or tcp producer the channel then fails as for a bad frame
 *   (its producer is told, what it sent after is dropped unread, a
 *   FDX_VIEW_FAILED view follows); from a local one it is not failed;
 *   -ENOMEM if the reassembly buffer cannot grow (call again).
 */
FDX_API int fdx_gate_next_record(struct fdx_gate *g, struct fdx_view *v, const void **rec,
				 uint32_t *len);

/**
 * Release a view: its memory goes back (to the producer on shm and local,
 * to the gate's pool on tcp) and its credit to the producer. Views may be
 * released in any order. Afterwards its data, message and records are
 * invalid.
 *
 * @return 0; -EINVAL if g or v is NULL or v is not an unreleased view of g.
 */
FDX_API int fdx_gate_release(struct fdx_gate *g, struct fdx_view *v);

/**
 * A descriptor (an eventfd, non-blocking, owned by the gate: do not close
 * it; valid until fdx_gate_destroy()) readable when fdx_gate_next() may have
 * something; armed by fdx_gate_next() returning -EAGAIN with timeout 0. Read
 * 8 bytes from it, then call fdx_gate_next(..., 0) until -EAGAIN.
 *
 * @return the descriptor; -EINVAL if g is NULL.
 */
FDX_API int fdx_gate_event_fd(const struct fdx_gate *g);

/** Counters of one input channel; see fdx_gate_channel_stats(). */
struct fdx_input_channel_stats {
	uint32_t size; /**< set by the caller: sizeof(struct fdx_input_channel_stats) */
	uint32_t link; /**< enum fdx_link of the producer; 0 while not open */
	uint32_t exclusive; /**< exclusive credits */
	uint32_t floating; /**< floating credits it holds now */
	uint32_t backlog; /**< the producer's last announced backlog */
	uint32_t unannounced; /**< credit granted but not yet sent to the producer */
	uint32_t held; /**< buffers received and not released (queued or in views) */
	uint32_t max_held; /**< the most ever held */
	uint64_t credits_announced; /**< all credit granted to the producer, initial included */
	uint64_t buffers_received;
	uint64_t events_received;
	uint64_t bytes_received;
	int32_t error; /**< 0, or why the channel failed */
	uint32_t pad;
	/**
	 * This side's part of the credit loop, since the channel first opened
	 * (log-linear percentiles, at most 1/8 above): a buffer arrived at the
	 * gate -> released by the consumer (hold), and released -> its credit
	 * written to the producer (credit_wait; the oldest of each update).
	 */
	uint64_t hold_p50_ns;
	uint64_t hold_p99_ns;
	uint64_t credit_wait_p50_ns;
	uint64_t credit_wait_p99_ns;
	/**
	 * A buffer sent by its producer -> it reached this gate, on shm (one
	 * host, one clock; 0 elsewhere): the descriptor's way.
	 */
	uint64_t one_way_p50_ns;
	uint64_t one_way_p99_ns;
	/** Credit it has in place of its exclusive one (in-place links), 0 if none. */
	uint32_t inplace;
	uint32_t pad2;
};

/** Counters of a gate; see fdx_gate_stats(). */
struct fdx_gate_stats {
	uint32_t size; /**< set by the caller: sizeof(struct fdx_gate_stats) */
	uint32_t n_channels;
	uint32_t channels_open;
	uint32_t floating_free; /**< floating credits no channel holds */
	uint64_t buffers_received;
	uint64_t events_received;
	uint64_t bytes_received;
	uint64_t records; /**< records returned by fdx_gate_next_record() */
	/**
	 * Payload bytes the library copied between the producer's emit and this
	 * read, reassembly not counted (tcp: received into our segments; shm and
	 * local: none).
	 */
	uint64_t bytes_copied;
	uint64_t bytes_reassembled; /**< bytes copied to reassemble spanning records */
	uint32_t held; /**< buffers received and not released */
	uint32_t pad;
};

/**
 * Read the counters of input channel ch. Any thread.
 *
 * @param st filled in; st->size must be set to sizeof(*st) (or a smaller,
 *   older size: only that many bytes are written).
 * @return 0; -EINVAL if g or st is NULL, st->size < 8 or ch is out of range.
 */
FDX_API int fdx_gate_channel_stats(struct fdx_gate *g, uint32_t ch,
				   struct fdx_input_channel_stats *st);

/**
 * Read the gate's counters. Any thread.
 *
 * @param st filled in; st->size must be set to sizeof(*st) (or a smaller,
 *   older size: only that many bytes are written).
 * @return 0; -EINVAL if g or st is NULL or st->size < 8.
 */
FDX_API int fdx_gate_stats(struct fdx_gate *g, struct fdx_gate_stats *st);

FDX_END_DECLS

#endif /* FDX_FDX_GATE_H */
