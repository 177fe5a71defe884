/* SPDX-License-Identifier: MIT */
/**
 * @file exchange.h
 * The exchange: one per TaskManager. It serves the control plane (the gRPC
 * service fdx.DataExchange, bidirectional stream ExchangeData) on a Unix
 * socket or a TCP address, and opens one stream to each peer TaskManager it
 * sends data to. Only control frames and credits travel on it.
 *
 * Threads: the functions here take the exchange's lock and may be called
 * from any thread (partitions and gates call them from their own), except
 * fdx_exchange_poll(), one thread at a time, and fdx_exchange_destroy(),
 * which must not race with any other use of the exchange. The exchange runs
 * one completion-queue thread for gRPC, one io_uring thread for the data
 * plane and, for a Unix socket, one thread that accepts connections and
 * checks each peer's credentials (SO_PEERCRED) before gRPC sees it.
 */
#ifndef FDX_FDX_EXCHANGE_H
#define FDX_FDX_EXCHANGE_H

#include <stdint.h>

#include <fdx/common.h>
#include <fdx/log.h>

FDX_BEGIN_DECLS

struct fdx_exchange;

/** The control-plane protocol version this library speaks. */
#define FDX_PROTOCOL_VERSION 2u

/** Most uids an exchange can be told to accept on its Unix socket. */
#define FDX_EXCHANGE_MAX_UIDS 16u

/**
 * Options of fdx_exchange_create(). Zero-initialise, set size = sizeof(struct
 * fdx_exchange_opts), then the fields you need; zero or NULL means default.
 */
struct fdx_exchange_opts {
	uint32_t size; /**< sizeof(struct fdx_exchange_opts) */
	/** Protocol version announced (default FDX_PROTOCOL_VERSION; others for tests). */
	uint32_t protocol_version;
	/**
	 * Where to serve: "unix:PATH" or "HOST:PORT" (PORT 0 picks a free one).
	 * Default: "unix:DIR/tm-PID-N.sock", DIR being $XDG_RUNTIME_DIR/fdx or
	 * /tmp/fdx-UID, created with mode 0700 and refused if anyone else can
	 * enter it.
	 */
	const char *listen;
	/** This TaskManager's id, sent in the handshake (default "tm-PID"). */
	const char *tm_id;
	/** Uids accepted on the Unix socket; with n_allow_uids 0, only our own. */
	const uint32_t *allow_uids;
	uint32_t n_allow_uids; /**< entries in allow_uids, at most FDX_EXCHANGE_MAX_UIDS */
	uint32_t log_level; /**< one of enum fdx_log_level; 0 = FDX_LOG_WARN */
	fdx_log_fn log_fn; /**< log sink, or NULL; called from the exchange's threads too */
	void *log_ud; /**< passed to log_fn */
	uint32_t seg_size; /**< segment size announced in the handshake (default 32 KiB) */
	uint32_t pad;
	/*
	 * Limits on what a peer (any local process of an allowed uid, or
	 * anyone who reaches a TCP address) can make this TaskManager hold
	 * through its control socket. Zero means the default.
	 */
	/**
	 * Memory gRPC may use for the control streams, server and client side
	 * (a gRPC resource quota), in MiB (default FDX_CTL_MEMORY_MIB_DEFAULT).
	 * Streams that would exceed it are reset; what they held goes back.
	 */
	uint32_t ctl_memory_mib;
	/** Streams at once on one control connection (default FDX_CTL_STREAMS_DEFAULT). */
	uint32_t ctl_streams_max;
	/**
	 * A stream that has not said hello this long after it opened is ended
	 * (default FDX_CTL_HELLO_TIMEOUT_MS_DEFAULT).
	 */
	uint32_t hello_timeout_ms;
	/**
	 * A control connection with no stream this long is closed; a connection
	 * whose peer stopped answering is found by keepalive pings at this
	 * period too (default FDX_CTL_IDLE_TIMEOUT_MS_DEFAULT).
	 */
	uint32_t idle_timeout_ms;
};

/** Size of struct fdx_exchange_opts in fdx 0.1, before the limits: still accepted. */
#define FDX_EXCHANGE_OPTS_SIZE_V1 64u
/** Default ctl_memory_mib. */
#define FDX_CTL_MEMORY_MIB_DEFAULT 16u
/** Default ctl_streams_max: a peer needs one stream, fdx-stat one more. */
#define FDX_CTL_STREAMS_DEFAULT 8u
/** Default hello_timeout_ms. */
#define FDX_CTL_HELLO_TIMEOUT_MS_DEFAULT 5000u
/** Default idle_timeout_ms. */
#define FDX_CTL_IDLE_TIMEOUT_MS_DEFAULT 10000u
/**
 * The largest control message accepted: the largest frame fdx sends (a
 * CreditUpdate of at most 4096 channels and 8192 returned offsets, a Backlog
 * of at most 4096 channels), with room to spare.
 */
#define FDX_CTL_FRAME_MAX (256u * 1024)

/**
 * Create an exchange and start serving: the control socket, the data
 * plane's sockets (a Unix one beside the control socket or in the default
 * directory, and a TCP one) and its threads.
 *
 * @param o options (borrowed; strings and allow_uids are copied; the log sink
 *   must stay callable until the exchange is destroyed).
 * @param out receives the exchange, owned by the caller until
 *   fdx_exchange_destroy(); set to NULL first, assigned only on success.
 * @return 0 on success;
 *   -EINVAL if o or out is NULL, o->size is below FDX_EXCHANGE_OPTS_SIZE_V1
 *     (an older caller's smaller struct gets the defaults of the fields it
 *     lacks) or sets a field this version does not know (a newer caller's),
 *     a limit is above 2^31 - 1, the listen address cannot be parsed ("unix:" with
 *     no path, or no ":PORT"), n_allow_uids is above FDX_EXCHANGE_MAX_UIDS,
 *     or allow_uids is NULL with n_allow_uids > 0;
 *   -EPERM if the default socket directory is not ours or others can enter it;
 *   -EADDRINUSE if a live exchange already serves that Unix socket, or gRPC
 *     cannot serve the TCP address (in use, or not an address of this host);
 *   -EADDRNOTAVAIL if the data plane's TCP host cannot be resolved;
 *   -ENAMETOOLONG if a Unix socket path (or the data socket's, PATH.data) is
 *     too long;
 *   the -errno of io_uring_setup (-ENOSYS, -EPERM, -ENOMEM, ...) if the data
 *     plane's ring cannot be set up (old kernel, seccomp, io_uring_disabled);
 *   -ENOMEM; another -errno from eventfd, socket, bind, listen, mkdir or
 *     pthread_create.
 */
FDX_API int fdx_exchange_create(const struct fdx_exchange_opts *o, struct fdx_exchange **out);

/**
 * Stop everything within about a second, streams open or not: credit still
 * owed goes first (100 ms at most), then peers see their streams end; the
 * socket files are removed. Partitions destroyed while their consumers still
 * held buffers (see fdx_partition_destroy()) end here: their consumers are
 * hung up on and those segments are free in their nbp again. Must not race
 * with any other use of ex.
 *
 * @return 0 (NULL is a no-op); -EBUSY, with nothing done, while partitions
 *   or gates created on ex still exist (they would point at freed state):
 *   destroy them first (the log says how many).
 */
FDX_API int fdx_exchange_destroy(struct fdx_exchange *ex);

/**
 * The address the exchange serves, as a peer passes it to
 * fdx_exchange_connect() ("unix:PATH" or "HOST:PORT" with the real port).
 *
 * @return a string owned by the exchange (do not free it), valid until
 *   fdx_exchange_destroy(); NULL if ex is NULL.
 */
FDX_API const char *fdx_exchange_address(const struct fdx_exchange *ex);

/**
 * Open (or reuse) the stream to the TaskManager serving at addr and shake
 * hands with it, waiting at most timeout_ms.
 *
 * @param ex the exchange.
 * @param addr the peer's address (borrowed; copied).
 * @param timeout_ms the longest wait; <= 0 means 5000.
 * @return 0 once the peer answered the handshake (also if it already had);
 *   -EINVAL if an argument is NULL;
 *   FDX_EVERSION if the peer speaks another protocol version (the log says which);
 *   -ECONNREFUSED if nobody serves addr (a Unix peer that refuses our uid
 *     closes the connection: -ECONNREFUSED or FDX_EPEERGONE);
 *   FDX_EREFUSED if the stream ended with a permission-denied or
 *     unauthenticated status;
 *   -ETIMEDOUT if the wait ran out;
 *   FDX_EPEERGONE if the stream failed for another reason; -ENOMEM.
 */
FDX_API int fdx_exchange_connect(struct fdx_exchange *ex, const char *addr, int timeout_ms);

/**
 * Register an input gate of this TaskManager: producers may then open its
 * channels 0..n_channels-1, each granted initial_credit when it opens
 * (Flink's exclusive buffers per channel). Events about them come from
 * fdx_exchange_poll(). There is no call to unregister such a gate; use
 * fdx_gate_create() for the data plane's gates.
 *
 * @return 0; -EINVAL if ex is NULL or n_channels is 0 or above 65536;
 *   -EEXIST if the gate is registered already (also by fdx_gate_create());
 *   -ENOMEM.
 */
FDX_API int fdx_exchange_add_gate(struct fdx_exchange *ex, uint32_t gate, uint32_t n_channels,
				  uint32_t initial_credit);

/**
 * Open a channel from this TaskManager (the producer) to input channel
 * gate_channel of gate at the peer serving addr, over the one stream to that
 * peer (opened as by fdx_exchange_connect() if needed). Waits for the answer.
 *
 * @param ex the exchange.
 * @param addr the consumer's address (borrowed).
 * @param partition_id the producing partition's id, a string (borrowed;
 *   sent, not kept).
 * @param subpartition the subpartition that feeds this channel.
 * @param gate the consumer's input gate.
 * @param gate_channel the input channel of that gate.
 * @param timeout_ms the longest wait, handshake included; <= 0 means 5000.
 * @param chan receives the channel's id (never 0), used by every later call
 *   and event; close it with fdx_exchange_close_channel().
 * @param initial_credit receives the credit granted at open (may be NULL).
 * @return 0; -EINVAL if ex, addr, partition_id or chan is NULL; -ENOENT if
 *   the peer has no such gate or channel; -EBUSY if that input channel is
 *   open already; -ENOMEM (here or at the peer); another -errno the peer
 *   answered with, or FDX_EREFUSED if its refusal carried none; -ETIMEDOUT
 *   (a late answer is closed again); every error of fdx_exchange_connect();
 *   FDX_EPEERGONE (or another code of a failed stream, as for
 *   fdx_exchange_connect()) if the stream failed meanwhile.
 */
FDX_API int fdx_exchange_open_channel(struct fdx_exchange *ex, const char *addr,
				      const char *partition_id, uint32_t subpartition,
				      uint32_t gate, uint32_t gate_channel, int timeout_ms,
				      uint32_t *chan, uint32_t *initial_credit);

/**
 * Announce credit to the producer of an open input channel, and hand back
 * the offsets of its buffers this consumer is done with (in order). Credits
 * are coalesced: while a message is on its way, what accumulates goes in the
 * next one. No syscall per call.
 *
 * @param offsets n_offsets offsets (borrowed; copied), or NULL when 0.
 * @return 0; -EINVAL if ex is NULL, or offsets is NULL with n_offsets > 0;
 *   -ENOENT if no producer has that input channel open; -EOVERFLOW if the
 *   credit not yet sent would pass 2^32 - 1; -ENOMEM.
 */
FDX_API int fdx_exchange_credit(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
				uint32_t added, const uint64_t *offsets, uint32_t n_offsets);

/**
 * Producer: a buffer at offset is being sent on channel; call it before the
 * data goes, so that a fast consumer cannot hand it back first. It spends one credit and
 * stays in flight until the consumer hands the offset back in a credit
 * update; an offset handed back that is not in flight on that channel, or
 * credit that would take the channel's available credit past 2^32 - 1,
 * fails the stream (with the reason on both sides).
 *
 * @return 0; -EINVAL if ex is NULL, offset is 0 (never a segment), or the
 *   channel is a partition's (fdx_partition_connect() opened it: its
 *   credit is the partition's to spend); -ENOENT if channel is not open;
 *   -EEXIST if offset is in flight on it already; -EAGAIN if the channel has
 *   no credit (nothing recorded); -ENOMEM.
 */
FDX_API int fdx_exchange_sent(struct fdx_exchange *ex, uint32_t channel, uint64_t offset);

/**
 * Producer: announce how many buffers are queued for channel (its backlog),
 * so the consumer can hand it floating credit. Coalesced: only the latest
 * value goes, once the stream is idle.
 *
 * @return 0; -EINVAL if ex is NULL; -ENOENT if channel is not open.
 */
FDX_API int fdx_exchange_backlog(struct fdx_exchange *ex, uint32_t channel, uint32_t backlog);

/**
 * Producer: close channel; the consumer is told (FDX_EV_CHANNEL_CLOSED) and
 * may let another producer open that input channel. Credit the consumer sent
 * before it saw the close still comes as FDX_EV_CREDIT. The channel's memory
 * goes when the consumer confirms the close (its ChannelClosed frame, after
 * any such credit) or the stream ends; channel ids are not reused before
 * 2^32 openings, so a closed id names no channel.
 *
 * @return 0; -EINVAL if ex is NULL; -ENOENT if channel is not open.
 */
FDX_API int fdx_exchange_close_channel(struct fdx_exchange *ex, uint32_t channel);

/** What an event reports; see struct fdx_exchange_event. */
enum fdx_exchange_event_type {
	/** Consumer: a producer opened input channel (gate, gate_channel). */
	FDX_EV_CHANNEL_OPENED = 1,
	/** Producer: credit and returned offsets for channel. */
	FDX_EV_CREDIT = 2,
	/** Either side: the channel is gone; error says why, message names the peer. */
	FDX_EV_CHANNEL_FAILED = 3,
	/** Consumer: the producer announced the channel's backlog. */
	FDX_EV_BACKLOG = 4,
	/** Consumer: the producer closed the channel. */
	FDX_EV_CHANNEL_CLOSED = 5,
};

/** One event, filled by fdx_exchange_poll(). */
struct fdx_exchange_event {
	uint32_t type; /**< one of enum fdx_exchange_event_type */
	uint32_t channel; /**< producer: the channel id; consumer: 0 */
	uint32_t gate; /**< consumer: the input gate; producer: the peer's gate */
	uint32_t gate_channel; /**< the input channel of that gate */
	uint32_t credits; /**< FDX_EV_CREDIT: credit added */
	uint32_t n_offsets; /**< FDX_EV_CREDIT: buffers handed back */
	const uint64_t *offsets; /**< their offsets, valid until the next poll */
	int32_t error; /**< FDX_EV_CHANNEL_FAILED: a negative fdx return code */
	uint32_t subpartition; /**< FDX_EV_CHANNEL_OPENED: the producer's subpartition */
	uint32_t backlog; /**< FDX_EV_BACKLOG: buffers queued at the producer */
	char peer[64]; /**< the peer TaskManager's id */
	char message[192]; /**< FDX_EV_CHANNEL_FAILED: the reason, naming the peer */
};

/**
 * Take up to max pending events, oldest first, without blocking. Events of
 * one channel come in the order they were sent. The offsets of the events
 * returned stay valid until the next call (owned by the exchange). One
 * thread at a time; takes no lock.
 *
 * @param evs an array of max events, filled in (borrowed).
 * @return the number of events (0 if none); -EINVAL if ex or evs is NULL.
 */
FDX_API int fdx_exchange_poll(struct fdx_exchange *ex, struct fdx_exchange_event *evs,
			      uint32_t max);

/**
 * A descriptor (an eventfd, non-blocking, owned by the exchange: do not close
 * it; valid until fdx_exchange_destroy()) that is readable while events may
 * be pending: poll it, read 8 bytes, then call fdx_exchange_poll() until 0.
 *
 * @return the descriptor, or -EINVAL if ex is NULL.
 */
FDX_API int fdx_exchange_event_fd(const struct fdx_exchange *ex);

/** Counters of an exchange, filled by fdx_exchange_stats(). */
struct fdx_exchange_stats {
	uint32_t size; /**< set by the caller: sizeof(struct fdx_exchange_stats) */
	uint32_t peers_up; /**< outgoing streams with a completed handshake */
	uint32_t sessions; /**< incoming streams being served */
	uint32_t pad;
	uint64_t handshakes_served; /**< incoming handshakes answered */
	uint64_t handshakes_refused; /**< incoming handshakes refused (version) */
	uint64_t peers_refused; /**< Unix connections refused by credentials */
	uint64_t frames_in; /**< control frames received */
	uint64_t frames_out; /**< control frames sent */
	uint64_t bad_frames; /**< frames that did not parse or broke the protocol */
	uint64_t credit_msgs_out; /**< CreditUpdate messages sent */
	uint64_t credits_out; /**< credit announced in them */
	uint64_t credits_in; /**< credit received */
	uint32_t channels_in; /**< input channels open (consumer side) */
	uint32_t channels_out; /**< channels open (producer side) */
	uint32_t channels_closing; /**< closed by us, the consumer's confirmation awaited */
};

/**
 * Read the exchange's counters. Thread-safe.
 *
 * @return 0; -EINVAL if ex or st is NULL or st->size < 8.
 */
FDX_API int fdx_exchange_stats(struct fdx_exchange *ex, struct fdx_exchange_stats *st);

FDX_END_DECLS

#endif /* FDX_FDX_EXCHANGE_H */
