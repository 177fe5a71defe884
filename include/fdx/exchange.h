/* SPDX-License-Identifier: MIT */
/**
 * @file exchange.h
 * The exchange: one per TaskManager. It serves the control plane (the gRPC
 * service fdx.DataExchange, bidirectional stream ExchangeData) on a Unix
 * socket or a TCP address, and opens one stream to each peer TaskManager it
 * sends data to. Only control frames and credits travel on it.
 *
 * Threads: every call here is made by the exchange's owner (any one thread
 * at a time, unless a function says it is thread-safe). The exchange runs one
 * completion-queue thread for gRPC and, for a Unix socket, one thread that
 * accepts connections and checks each peer's credentials (SO_PEERCRED) before
 * gRPC sees it.
 */
#ifndef FDX_FDX_EXCHANGE_H
#define FDX_FDX_EXCHANGE_H

#include <stdint.h>

#include <fdx/common.h>
#include <fdx/log.h>

FDX_BEGIN_DECLS

struct fdx_exchange;

/** The control-plane protocol version this library speaks. */
#define FDX_PROTOCOL_VERSION 1u

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
};

/**
 * Create an exchange and start serving.
 *
 * @param o options (borrowed; strings are copied).
 * @param out receives the exchange; set to NULL first, assigned only on success.
 * @return 0 on success;
 *   -EINVAL if o or out is NULL, o->size is too small, the listen address
 *     cannot be parsed, or n_allow_uids is above FDX_EXCHANGE_MAX_UIDS;
 *   -EPERM if the default socket directory is not ours or others can enter it;
 *   -EADDRINUSE if a live exchange already serves that address;
 *   -ENAMETOOLONG if a Unix socket path is too long;
 *   -ENOMEM; another -errno from socket, bind, listen or mkdir.
 */
FDX_API int fdx_exchange_create(const struct fdx_exchange_opts *o, struct fdx_exchange **out);

/**
 * Stop everything within one second, streams open or not: peers see their
 * streams fail; the socket file is removed. NULL is a no-op.
 */
FDX_API void fdx_exchange_destroy(struct fdx_exchange *ex);

/**
 * The address the exchange serves, as a peer passes it to
 * fdx_exchange_connect() ("unix:PATH" or "HOST:PORT" with the real port).
 *
 * @return a string owned by the exchange, or NULL if ex is NULL.
 */
FDX_API const char *fdx_exchange_address(const struct fdx_exchange *ex);

/**
 * Open (or reuse) the stream to the TaskManager serving at addr and shake
 * hands with it, waiting at most timeout_ms.
 *
 * @param ex the exchange.
 * @param addr the peer's address (borrowed).
 * @param timeout_ms the longest wait; <= 0 means 5000.
 * @return 0 once the peer answered the handshake (also if it already had);
 *   -EINVAL if an argument is NULL;
 *   FDX_EVERSION if the peer speaks another protocol version (the log says which);
 *   FDX_EREFUSED if the peer refused us otherwise (e.g. our uid);
 *   -ECONNREFUSED if nobody serves addr; -ETIMEDOUT if the wait ran out;
 *   FDX_EPEERGONE if the stream failed for another reason; -ENOMEM.
 */
FDX_API int fdx_exchange_connect(struct fdx_exchange *ex, const char *addr, int timeout_ms);

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
	uint64_t bad_frames; /**< frames that did not parse */
};

/**
 * Read the exchange's counters. Thread-safe.
 *
 * @return 0; -EINVAL if ex or st is NULL or st->size < 8.
 */
FDX_API int fdx_exchange_stats(struct fdx_exchange *ex, struct fdx_exchange_stats *st);

FDX_END_DECLS

#endif /* FDX_FDX_EXCHANGE_H */
