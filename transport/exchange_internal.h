/* SPDX-License-Identifier: MIT */
/*
 * What the data plane (uring_loop.c, data_*.c, link_*.c) needs of the control
 * plane (exchange.c, consumer_session.c, producer_peer.c, unix_listener.c).
 *
 * Hooks run on the exchange's completion-queue thread with ex->lock held:
 * they must not block and must not call back into the exchange.
 */
#ifndef FDX_TRANSPORT_EXCHANGE_INTERNAL_H
#define FDX_TRANSPORT_EXCHANGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <fdx/exchange.h>

#include "../runtime/credit_proof.h"
#include "../runtime/log.h"

struct fdx__dp;
struct fdx__credit_outbox;

/* A gate's input channels, as producers open, close and lose them. */
struct fdx__gate_hooks {
	/*
	 * Before the answer to the open leaves: the producer acts on the answer.
	 * 0 with *opening set to the number of this opening of the channel
	 * (credit names it), or -EBUSY (taken meanwhile) or -ENOMEM: refused.
	 */
	int (*opened)(void *ud, uint32_t gate_channel, uint64_t sess, const char *peer,
		      uint64_t *opening);
	/* data_close: a CLOSE frame on the data socket ends it (after its last data). */
	void (*closed)(void *ud, uint32_t gate_channel, uint64_t sess, int data_close);
	void (*failed)(void *ud, uint32_t gate_channel, uint64_t sess, int err, const char *msg);
	/* Whether the channel is taken otherwise (a local producer): the open is refused. */
	int (*busy)(void *ud, uint32_t gate_channel);
	/* Whether its producer ended it (all its data came): removing the gate is no failure. */
	int (*ended)(void *ud, uint32_t gate_channel);
	/* The channel's credit outbox: the session takes its producer's credit from it. */
	struct fdx__credit_outbox *(*outbox)(void *ud, uint32_t gate_channel);
};

/* A producer channel's credit, checked by its ledger (runtime/credit_ledger.h), and its end. */
struct fdx__chan_hooks {
	/*
	 * Credit and offsets the consumer handed back (written_ns: when it
	 * wrote them, on this host's monotonic clock; 0 if unknown; st: the
	 * granted total and proof buffers go with from now on, or NULL): 0; 1
	 * (taken back already: ignored); -ENOENT with *bad set (offs[*bad]
	 * was never sent); -EOVERFLOW. A refused credit changes nothing.
	 */
	int (*credit)(void *ud, uint32_t added, const uint64_t *offs, uint32_t n,
		      uint64_t written_ns, const struct fdx__credit_stamp *st, uint32_t *bad);
	/* The consumer let go of what it held: every buffer in flight comes back (lost). */
	void (*take_back)(void *ud);
	/* Buffers in flight, not handed back. */
	uint32_t (*in_flight)(void *ud);
	void (*failed)(void *ud, int err, const char *msg);
};

struct fdx__dp *fdx__exchange_dp(struct fdx_exchange *ex);
struct fdx__log *fdx__exchange_log(struct fdx_exchange *ex);
const char *fdx__exchange_tm_id(const struct fdx_exchange *ex);
int fdx__exchange_uid_allowed(const struct fdx_exchange *ex, uint32_t uid);

int fdx__exchange_add_gate_hooked(struct fdx_exchange *ex, uint32_t gate, uint32_t n_channels,
				  uint32_t initial_credit, const struct fdx__gate_hooks *h,
				  void *ud);
/*
 * The input channel's data socket failed: it ends here (if session sess still
 * has it open) and its producer is told with an Error frame carrying code and
 * msg. It may be opened again.
 */
void fdx__exchange_drop_input(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
			      uint64_t sess, int code, const char *msg);

/*
 * The input channel's outbox has credit for session sess's opening: it goes
 * as soon as the session's stream can send. 0, or -ENOENT if that opening is
 * over (a channel may have been closed and opened again by the same session).
 */
int fdx__exchange_credit_sess(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
			      uint64_t sess, uint64_t opening);

/* Unregister a gate: its open channels fail at their producers (Error frame). */
void fdx__exchange_remove_gate(struct fdx_exchange *ex, uint32_t gate);

/* Route channel's credit and failure to h; *available gets its credit now, with its stamp. */
int fdx__exchange_hook_channel(struct fdx_exchange *ex, uint32_t channel,
			       const struct fdx__chan_hooks *h, void *ud, uint64_t *available);
/*
 * The stamp a buffer on plain channel channel goes with now (its latest
 * granted total and proof): 0, or -ENOENT. For a producer that writes its
 * own data frames (the tests' hand-made peers).
 */
int fdx__exchange_chan_stamp(struct fdx_exchange *ex, uint32_t channel,
			     struct fdx__credit_stamp *st);
/*
 * The channel's data socket failed: every offset in flight comes back
 * (take_back hook), and the channel is closed.
 */
void fdx__exchange_fail_channel(struct fdx_exchange *ex, uint32_t channel);

/* fdx_exchange_close_channel(), saying a CLOSE frame ends it on its data socket. */
int fdx__exchange_close_channel_data(struct fdx_exchange *ex, uint32_t channel);

/* Stop the hooks (then close the channel, if open). */
void fdx__exchange_unhook_channel(struct fdx_exchange *ex, uint32_t channel);

/* What the handshake with the peer at addr told (it must be up). */
struct fdx__peer_data {
	uint32_t link; /* enum fdx_link the consumer proposed */
	uint8_t token[16]; /* the stream's (HelloAck): names its data sockets; admits one */
	uint8_t sock_token[16]; /* the channel's OpenChannelAck token, if has_sock_token */
	int has_sock_token;
	char unix_ep[128]; /* "unix:PATH" or "" */
	char tcp_ep[128]; /* "HOST:PORT" or "" */
	char remote_tm[64];
};
/*
 * What the data plane needs of the stream to addr; chan (an open channel on
 * it, or UINT32_MAX) gives its one-time socket token, taken: one dial each.
 */
int fdx__exchange_peer_data(struct fdx_exchange *ex, const char *addr, uint32_t chan,
			    struct fdx__peer_data *pd);

/*
 * A data socket presented token: the session it admits the socket to, 0 with
 * *sess and peer set, the token used up (a token admits one data socket), or
 * -ENOENT (never handed out, used already, or its session is over).
 */
int fdx__exchange_token_take(struct fdx_exchange *ex, const uint8_t *token, uint64_t *sess,
			     char *peer, size_t n);

/* The same lookup without using the token up (tests and fuzz harnesses find a session by it). */
int fdx__exchange_token_session(struct fdx_exchange *ex, const uint8_t *token, uint64_t *sess,
				char *peer, size_t n);

/*
 * A Unix socket file this process bound (unix_listener.c): removed at exit()
 * unless fdx__unix_path_unlink() removed it first; only the process that
 * bound it removes it.
 */
void fdx__unix_path_bound(const char *path);
void fdx__unix_path_unlink(const char *path);

/* Implemented by the data plane (uring_loop.c), called by the exchange. */
struct fdx__dp_params {
	const char *unix_path; /* data socket for shm */
	const char *tcp_host; /* host of the tcp data socket */
};
int fdx__dp_create(struct fdx_exchange *ex, const struct fdx__dp_params *prm, struct fdx__dp **out);
void fdx__dp_destroy(struct fdx__dp *dp);
/* Partitions and gates still attached (*parts, *gates); their sum. */
uint32_t fdx__dp_users(struct fdx__dp *dp, uint32_t *parts, uint32_t *gates);
const char *fdx__dp_unix_endpoint(const struct fdx__dp *dp);
const char *fdx__dp_tcp_endpoint(const struct fdx__dp *dp);

struct fdx_partition;
struct fdx_gate;
/*
 * Call on_part for each partition and on_gate for each gate of the exchange,
 * under the data plane's lock (none is destroyed meanwhile). The callbacks
 * must not block or call into the exchange. Any thread but the cq thread
 * holding the exchange's lock (the order is data plane, then exchange).
 */
void fdx__dp_visit(struct fdx__dp *dp, void (*on_part)(void *ud, struct fdx_partition *p),
		   void (*on_gate)(void *ud, struct fdx_gate *g), void *ud);

/* Implemented by stats.c: the whole TaskManager's statistics, for a StatsReply. */
struct Fdx__StatsReply;
/* Fill r's partitions and gates (r initialised by the caller): 0 or -ENOMEM. */
int fdx__stats_fill(struct fdx_exchange *ex, struct Fdx__StatsReply *r);
/* Free what fdx__stats_fill() allocated in r (not r itself). */
void fdx__stats_clear(struct Fdx__StatsReply *r);

#endif /* FDX_TRANSPORT_EXCHANGE_INTERNAL_H */
