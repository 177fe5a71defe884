/* SPDX-License-Identifier: MIT */
/*
 * What the files of the control plane share among themselves: the exchange,
 * its sessions (consumer side), its peers (producer side), the channels of
 * both and the control plane's record of a gate, and the functions they
 * call across files. The data plane and the statistics see none of it: their
 * interface is exchange_internal.h.
 *
 * Locking: the lists, states and counters below are under ex->lock (what is
 * set at creation is only read after; a comment says where else), and every
 * *_locked function is called with it held. See exchange.c for the threads.
 */
#ifndef FDX_TRANSPORT_EXCHANGE_PRIVATE_H
#define FDX_TRANSPORT_EXCHANGE_PRIVATE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include <fdx/exchange.h>

#include "../runtime/credit_ledger.h"
#include "../runtime/credit_outbox.h"
#include "../runtime/idmap.h"
#include "../runtime/log.h"
#include "../runtime/mpsc_queue.h"
#include "../runtime/port.h"
#include "control_codec.h"
#include "exchange_internal.h"

/* The status details of a stream we end because we are being destroyed. */
#define FDX__EXCHANGE_SHUTTING_DOWN "the TaskManager is shutting down"

struct fdx__session;
struct fdx__peer;
struct fdx__evnode;

/* Consumer side: an input channel a producer opened on a session. */
struct fdx__in_chan {
	struct fdx__session *s;
	uint32_t id; /* the producer's OpenChannel.id */
	uint32_t gate, gate_channel;
	uint32_t backlog; /* the last one announced */
	int marked; /* named in the frame being handled */
	/*
	 * Where its credit waits until the stream can send it: the outbox of
	 * the data-plane gate's channel (credit_outbox.h: the one place credit
	 * is coalesced), or its own (a plain gate, or one whose gate went).
	 */
	struct fdx__credit_outbox own;
	struct fdx__credit_outbox *ob;
	uint64_t ob_opening; /* the opening ob holds credit for (0: own) */
	int dirty;
	int gone; /* its gate was removed: only the producer's close is still expected */
	uint64_t opening; /* a data-plane gate's number for this opening (0: plain gate) */
	struct fdx__in_chan *next_dirty;
};

/* The control plane's record of a gate producers may open (not struct fdx_gate). */
struct fdx__ctl_gate {
	uint32_t id, n_channels, initial_credit;
	struct fdx__in_chan **chans; /* by gate channel; NULL when not open */
	const struct fdx__gate_hooks *hooks; /* a data-plane gate: news go there, not to events */
	void *hook_ud;
	struct fdx__ctl_gate *next;
};

/*
 * Producer-side channel states. CLOSED: closed by us, credit and returned
 * offsets sent before the consumer saw the close still arrive. ABANDONED: the
 * open timed out; a late answer is closed again. FAILED: refused or the
 * stream ended; freed once its opener has read why.
 */
enum fdx__out_chan_state {
	FDX__OUT_OPENING,
	FDX__OUT_OPEN,
	FDX__OUT_CLOSED,
	FDX__OUT_ABANDONED,
	FDX__OUT_FAILED
};

/* Producer side: a channel opened on the stream to a peer. */
struct fdx__out_chan {
	struct fdx__peer *p; /* NULL once failed */
	struct fdx__out_chan *pnext; /* in p->chans */
	uint32_t id, gate, gate_channel, subpartition;
	enum fdx__out_chan_state state;
	int result;
	int opening; /* its opener waits on it: it frees it */
	int marked; /* named in the credit update being handled */
	uint32_t initial;
	uint8_t sock_token[16]; /* its OpenChannelAck's: admits the data socket it may dial */
	int has_sock_token;
	/* A plain channel's credit (fdx_exchange_sent()); a partition's is in its ledger. */
	struct fdx__credit_ledger own;
	uint32_t backlog; /* the latest, not yet sent if bl_dirty */
	int bl_dirty;
	struct fdx__out_chan *bl_next;
	const struct fdx__chan_hooks *hooks; /* a data-plane channel: credit goes there */
	void *hook_ud;
	int unhooked; /* its partition went: late credit is ignored */
	int confirmed; /* CLOSED, and the consumer confirmed it (ChannelClosed) */
};

/* An incoming stream. */
/* OpenChannelAck tokens a session keeps unused at most (each admits one data socket). */
#define FDX__SESS_TOKENS 16u

struct fdx__session {
	struct fdx_exchange *ex;
	grpc_call *call;
	struct fdx__ctl_tag t_recv, t_send, t_close, t_status;
	grpc_byte_buffer *recv_bb;
	struct fdx__ctl_sendq q;
	int pending; /* operations in flight */
	int cancelled; /* set by RECV_CLOSE_ON_SERVER */
	int greeted; /* a valid hello came */
	int finishing; /* a final status is wanted */
	int status_sent; /* SEND_STATUS_FROM_SERVER started */
	int status_done; /* ... and completed */
	int stats_wanted; /* a StatsRequest waits for its answer (built outside ex->lock) */
	grpc_status_code final_code;
	char final_msg[256];
	char peer_tm[64];
	uint64_t serial; /* names the session to the data plane */
	uint64_t t_start; /* when its call came (CLOCK_MONOTONIC ns): the hello is due */
	uint8_t token[16]; /* HelloAck's: admits one data socket */
	int token_used;
	/* OpenChannelAcks' tokens, one data socket each; the oldest unused one is dropped. */
	struct fdx__sock_token {
		uint8_t t[16];
		int live;
	} more[FDX__SESS_TOKENS];
	uint32_t more_next;
	struct fdx__idmap ids; /* its channels by the producer's id */
	struct fdx__in_chan *dirty_head, *dirty_tail;
	struct fdx__session *prev, *next;
};

enum fdx__peer_state { FDX__PEER_CONNECTING, FDX__PEER_UP, FDX__PEER_FAILED };

/* An outgoing stream to one peer TaskManager. */
struct fdx__peer {
	struct fdx_exchange *ex;
	char *addr;
	grpc_channel *channel;
	grpc_call *call;
	struct fdx__ctl_tag t_recv, t_send, t_status;
	grpc_byte_buffer *recv_bb;
	grpc_metadata_array initial_md, trailing_md;
	grpc_status_code status;
	grpc_slice status_details;
	struct fdx__ctl_sendq q;
	int pending;
	struct fdx__out_chan *chans; /* every channel opened on this stream */
	struct fdx__out_chan *bl_dirty; /* channels whose backlog changed */
	enum fdx__peer_state state; /* under ex->lock */
	int result; /* why it failed, under ex->lock */
	int got_initial_md;
	int failing; /* we found the consumer at fault: Error frame, then cancel */
	char fail_msg[160];
	int waiters; /* owner threads in fdx_exchange_connect() on it; under ex->lock */
	int over; /* every operation completed; under ex->lock */
	char remote_tm[64];
	uint32_t link; /* chosen by the consumer: one of Fdx__Link */
	uint8_t token[16]; /* HelloAck's: names this stream's data sockets here */
	char unix_ep[128], tcp_ep[128]; /* the consumer's data sockets */
	struct fdx__peer *prev, *next;
};

struct fdx_exchange {
	struct fdx__port port; /* first: runtime/ reaches the data plane through it (port.h) */
	struct fdx__log log;
	uint32_t version;
	uint32_t seg_size;
	char boot_id[40]; /* /proc/sys/kernel/random/boot_id: same host, same id */
	char *tm_id;
	char *address; /* as peers dial it */
	uint64_t *credit_scratch; /* under lock: the offsets of a CreditUpdate being packed */
	int stats_wanted; /* some session has stats_wanted set */
	char *sock_path; /* Unix socket file we created, or NULL */
	uint32_t allow_uids[FDX_EXCHANGE_MAX_UIDS];
	uint32_t n_allow_uids;

	grpc_completion_queue *cq;
	grpc_server *server;
	int grpc_up; /* grpc_init() called */
	int server_started; /* grpc_server_start() called */
	int cq_running; /* cq_thread started */
	pthread_t cq_thread;
	int listen_fd;
	pthread_t accept_thread;
	int accepting;

	/* The pending grpc_server_request_call. */
	grpc_call *new_call;
	grpc_call_details details;
	grpc_metadata_array request_md;
	struct fdx__ctl_tag t_request, t_shutdown;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* peer and channel state changes, teardown progress */
	struct fdx__peer *peers;
	struct fdx__session *sessions;
	struct fdx__ctl_gate *gates;
	/*
	 * Our channels by id: open addressing (a power of two, at most half
	 * full). Ids count up from 1 and are not reused before they wrap (2^32
	 * openings), so a stale id names no channel; a channel is freed when its
	 * consumer confirmed the close (ChannelClosed) or its stream ended.
	 */
	struct fdx__idmap cchans;
	uint32_t next_id;
	uint32_t open_out; /* channels in state FDX__OUT_OPEN */

	/* cq thread -> owner */
	struct fdx__mpsc events;
	struct fdx__evnode *retired; /* returned by the last poll; owner only */
	int efd;
	int events_pushed; /* since the last eventfd write; under lock */
	int stopping;
	int server_down;
	uint32_t n_peers, n_sessions, peers_up;
	uint64_t sess_serial;
	struct fdx__dp *dp;
	struct fdx_exchange_stats st;
	/* Control-plane limits (fdx_exchange_opts). */
	grpc_resource_quota *quota;
	uint32_t streams_max, hello_ms, idle_ms, memory_mib;
};

_Static_assert(offsetof(struct fdx_exchange, port) == 0, "runtime/port.h: the port comes first");

/* ---- exchange.c: lifecycle, the cq thread, events to the owner ------------- */

/* The gRPC channel arguments of the control plane's limits (a: room for 10); how many. */
size_t fdx__exchange_grpc_args(struct fdx_exchange *ex, grpc_arg *a, int server);

/* The cq thread, at least once a second: end the streams that did not say hello in time. */
void fdx__sessions_end_silent(struct fdx_exchange *ex);

/*
 * An exchange with its options, lock and event queue, serving nothing yet:
 * 0 with *out set, or -errno (nothing left behind).
 */
int fdx__exchange_new(const struct fdx_exchange_opts *o, struct fdx_exchange **out);

/* One completion of the cq thread: its handler runs with ex->lock held (taken here). */
void fdx__exchange_cq_complete(struct fdx_exchange *ex, struct fdx__ctl_tag *t, int success);

/* With ex->lock held: queue an event (offsets copied) for fdx_exchange_poll(). */
void fdx__exchange_ev_push_locked(struct fdx_exchange *ex, const struct fdx_exchange_event *ev,
				  const uint64_t *offsets, uint32_t n);

/* With ex->lock held: one eventfd write for all the events of one message. */
void fdx__exchange_events_flush_locked(struct fdx_exchange *ex);

/* With ex->lock held: queue an FDX_EV_CHANNEL_FAILED event. */
void fdx__exchange_ev_channel_failed_locked(struct fdx_exchange *ex, uint32_t chan, uint32_t gate,
					    uint32_t gate_channel, int err, const char *peer,
					    const char *why);

/* ---- consumer_session.c: sessions, input channels, gates ------------------- */

/* With ex->lock held: a peer's stream to us came in on call (the session takes it). */
void fdx__session_start(struct fdx_exchange *ex, grpc_call *call);

/* With ex->lock held: a batch of s completed; s may be freed. */
void fdx__session_event(struct fdx__session *s, enum fdx__ctl_tag_kind kind, int ok);

/* With ex->lock held: end s's stream with a status (after what is queued); the first wins. */
void fdx__session_finish(struct fdx__session *s, grpc_status_code code, const char *msg);

/* Without ex->lock (the cq thread): answer every session that asked for statistics. */
void fdx__session_stats_answer(struct fdx_exchange *ex);

/* ---- producer_peer.c: peers and our channels -------------------------------- */

/* A peer for addr, with no channel or call yet; NULL if out of memory. */
struct fdx__peer *fdx__peer_new(struct fdx_exchange *ex, const char *addr);

/* With ex->lock held: send our hello on p's new call, start receiving, list p. */
void fdx__peer_begin_locked(struct fdx_exchange *ex, struct fdx__peer *p);

/*
 * With ex->lock held: a batch of p completed. Returns p when it is over and
 * must be freed with fdx__peer_free() (after ex->lock is released).
 */
struct fdx__peer *fdx__peer_event(struct fdx__peer *p, enum fdx__ctl_tag_kind kind, int ok);

/* Free an unlinked peer (no lock needed). */
void fdx__peer_free(struct fdx__peer *p);

/* With ex->lock held: the channel with that id, or NULL. */
struct fdx__out_chan *fdx__out_chan_get(const struct fdx_exchange *ex, uint32_t id);
/* With ex->lock held: the open channel with that id, or NULL. */
struct fdx__out_chan *fdx__out_chan_open_locked(struct fdx_exchange *ex, uint32_t id);
/* With ex->lock held: our channel id on p's stream, or NULL if p never opened it. */
struct fdx__out_chan *fdx__peer_chan(struct fdx__peer *p, uint32_t id);
/*
 * With ex->lock held: ask the consumer to close c (answered by ChannelClosed).
 * A backlog not yet sent would follow the close and name a channel the
 * consumer forgot (it fails the stream for that): it goes.
 */
void fdx__peer_send_close_locked(struct fdx__peer *p, struct fdx__out_chan *c, int data_close);
/* With ex->lock held: every offset in flight on c's partition channel comes back (its hook). */
void fdx__out_chan_return_inflight_locked(struct fdx__out_chan *c);

/*
 * With ex->lock held: open a channel on p's stream (its opener waits for the
 * answer, then calls fdx__out_chan_open_end_locked()). 0 with *out set, or -ENOMEM.
 */
int fdx__out_chan_open_begin_locked(struct fdx_exchange *ex, struct fdx__peer *p,
				    const char *partition_id, uint32_t subpartition, uint32_t gate,
				    uint32_t gate_channel, struct fdx__out_chan **out);

/*
 * With ex->lock held: c's opener stops waiting, answered or (timed_out) not.
 * 0 with *chan and *initial_credit (if not NULL) set, or why the open failed.
 */
int fdx__out_chan_open_end_locked(struct fdx_exchange *ex, struct fdx__out_chan *c, int timed_out,
				  const char *addr, uint32_t *chan, uint32_t *initial_credit);

/* ---- unix_listener.c: the Unix control socket ------------------------------- */

/* The default socket directory in dir: ours alone, created if missing. 0 or -errno. */
int fdx__unix_sock_dir(struct fdx_exchange *ex, char *dir, size_t n);

/* Remove the sockets of processes gone from dir (once per process). */
void fdx__unix_sweep_stale(struct fdx_exchange *ex, const char *dir);

/* Listen on the Unix socket path (ex->listen_fd): 0 or -errno. */
int fdx__unix_listen(struct fdx_exchange *ex, const char *path);

/* The accept thread (arg: the exchange): runs until ex->listen_fd is shut down. */
void *fdx__unix_accept_main(void *arg);

#endif /* FDX_TRANSPORT_EXCHANGE_PRIVATE_H */
