/* SPDX-License-Identifier: MIT */
/*
 * What the data plane's files share; private to them (and to the fuzz seam,
 * tests/fuzz/seams_dataplane.c). The data plane: one io_uring loop thread per
 * exchange owns every data socket, sends what the partitions queued as their
 * credit allows, and hands what arrives to the gates.
 *
 *   uring_loop.c   the loop thread and its ring, the data plane's life, the
 *                  partitions and gates it serves, its port (runtime/port.h)
 *   data_conn.c    a data connection: sockets in and out, send batches,
 *                  receives, the hello
 *   data_wire.c    the frame header: encode, decode, check (data_wire.h)
 *   data_hooks.c   what the control plane's hooks do to gates and subpartitions
 *   link_local.c, link_shm.c, link_tcp.c   one file per link
 *
 * Locking: dp->lock is held by the loop while it works (not while it sleeps)
 * and by whoever adds or removes partitions, gates and connections. Order:
 * dp->lock, then the exchange's lock. The task threads and the consumer
 * threads never take it: they meet the loop through queues and atomics.
 * The functions below that take a struct fdx__conn run with dp->lock held.
 * fdx__dp_init(), fdx__dp_handle_cqe(), fdx__dp_round_work(), fdx__conn_new()
 * and fdx__conn_post_hello_recv() are shared with the fuzz seam too.
 * Its includers define _GNU_SOURCE (liburing.h needs it).
 */
#ifndef FDX_TRANSPORT_DATAPLANE_PRIVATE_H
#define FDX_TRANSPORT_DATAPLANE_PRIVATE_H

#include <liburing.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "../runtime/input_gate.h"
#include "../runtime/result_partition.h"
#include "data_wire.h"
#include "exchange_internal.h"

#define RX_CAP (256u * 1024u)
#define HDR_LEN ((uint32_t)sizeof(struct fdx__dhdr))
#define HELLO_LEN (HDR_LEN + FDX__TOKEN_LEN)
#define GONE_GATES 16u /* gates removed lately: their late frames are dropped, not fatal */

enum op_kind { OP_WAKE = 1, OP_ACCEPT_UNIX, OP_ACCEPT_TCP, OP_SEND, OP_RECV, OP_HELLO };

struct op {
	enum op_kind kind;
	struct fdx__conn *c;
};

/* One iovec's worth of a send batch: a header (hdr > 0: index + 1) or bytes. */
struct txpart {
	uint32_t hdr;
	uint32_t len;
	const void *ptr;
	struct fdx_partition *p; /* tcp slice: its reference goes when sent */
	struct fdx__sub *s;
	int64_t seg;
	struct fdx__pitem *freeme; /* an event whose payload this is */
};

struct txb {
	struct fdx__dhdr *hdrs;
	uint32_t nh, caph;
	struct txpart *parts;
	uint32_t np, capp;
	struct iovec *iov; /* built when sent */
	uint32_t niov, capiov, iov_at;
};

enum conn_role { ROLE_OUT = 1, ROLE_IN };
enum rx_state { RX_HELLO, RX_REGION, RX_SHM, RX_HDR, RX_PAYLOAD };

struct fdx__conn {
	struct fdx__dp *dp;
	int fd;
	enum conn_role role;
	uint32_t link;
	int dead;
	int pending; /* operations in flight */
	char name[200]; /* the peer, for messages */
	/* Producer side. */
	char addr[128];
	uint8_t token[FDX__TOKEN_LEN]; /* the session it belongs to */
	int need_probe; /* its hang-up receive is to be posted by the loop */
	const struct fdx_region *region;
	struct txb b[2];
	int fill; /* the batch being filled; the other may be in flight */
	int sending;
	struct msghdr smh;
	uint8_t probe[16];
	/* Consumer side. */
	uint64_t sess;
	enum rx_state st;
	uint8_t *rx;
	uint32_t rx_len, need;
	struct msghdr rmh;
	struct iovec riov;
	struct { /* not a union with a struct cmsghdr: that has a flexible array member */
		alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(int) * 8)];
	} cbuf;
	int hello_fd;
	uint64_t hello_by; /* accepted: its hello must be in by then (0: it is) */
	uint32_t via_tcp; /* accepted on the tcp data socket (else the Unix one) */
	struct fdx__rmap *map;
	struct fdx__dhdr hdr; /* tcp: the frame being received */
	struct fdx__gitem *it;
	struct fdx_gate *it_gate; /* tcp: the gate whose segment it is received into */
	struct op op_send, op_recv;
	struct fdx__conn *next;
};

struct fdx__dp {
	struct fdx_exchange *ex;
	struct fdx__log *log;
	struct io_uring ring;
	int ring_up;
	pthread_t thread;
	int running;
	_Atomic uint32_t stop, sleeping, work;
	int efd;
	uint64_t efd_buf;
	struct op op_wake, op_acc_unix, op_acc_tcp;
	int ufd, tfd;
	char *unix_path;
	char unix_ep[160], tcp_ep[160];
	pthread_mutex_t lock;
	pthread_cond_t ready; /* the loop has its ring (or failed to) */
	int ring_result; /* 0 until known, then 1 or -errno */
	struct fdx_partition *parts;
	struct fdx_gate *gates;
	struct fdx__conn *conns;
	uint64_t next_tick;
	uint64_t accept_again[2]; /* unix, tcp: when to accept again after EMFILE (0: accepting) */
	uint64_t accept_logged; /* when the last pause was logged */
	uint64_t gone_gates[GONE_GATES]; /* id + 1 of gates removed lately, 0 = none */
	uint32_t gone_at;
	/* Local credit from consumer threads, applied by the loop (the partition may be gone). */
	struct fdx__mpsc lcredit;
	struct fdx__mpsc readyq; /* subpartitions to pump (fdx__dp_ready) */
};

/* ---- uring_loop.c ---------------------------------------------------------- */

/*
 * Test seam: NULL in the library. The fuzz targets (tests/fuzz/seams_dataplane.c)
 * set it to play the kernel for a data plane without a ring; fdx__dp_get_sqe()
 * then takes its submission entries from it.
 */
extern struct io_uring_sqe *(*fdx__seam_get_sqe)(void);

/* A submission entry of the loop's ring (submitting what is queued if full), or NULL. */
static inline struct io_uring_sqe *fdx__dp_get_sqe(struct fdx__dp *dp)
{
	struct io_uring_sqe *sqe;

	if (!dp->ring_up && fdx__seam_get_sqe)
		return fdx__seam_get_sqe(); /* tests/fuzz: no ring, the fuzzer plays the kernel */
	sqe = io_uring_get_sqe(&dp->ring);
	if (!sqe) {
		io_uring_submit(&dp->ring);
		sqe = io_uring_get_sqe(&dp->ring);
	}
	return sqe;
}

/* What every data plane starts with: no sockets yet, its lock and queues ready; ex's port. */
void fdx__dp_init(struct fdx__dp *dp, struct fdx_exchange *ex);
/* s is to be pumped by the loop (any thread; s is queued once until the loop takes it). */
void fdx__dp_ready(struct fdx__dp *dp, struct fdx__sub *s);
/* Wake the loop if it sleeps (any thread). */
void fdx__dp_kick(struct fdx__dp *dp);
/* The gate with that id, or NULL. */
struct fdx_gate *fdx__dp_gate_find(struct fdx__dp *dp, uint32_t id);
/* A buffer sent on s's channel this round (off: shm's slice, else 0), for the exchange. */
/* A completion of the loop's ring. */
void fdx__dp_handle_cqe(struct fdx__dp *dp, struct io_uring_cqe *cqe);
/* One round of the loop's work at now: 1 if it did something (the ring has entries to submit). */
int fdx__dp_round_work(struct fdx__dp *dp, uint64_t now);

/* ---- data_hooks.c ---------------------------------------------------------- */

/* A gate's input channels as the control plane opens, closes and fails them (ud: the gate). */
extern const struct fdx__gate_hooks fdx__dp_gate_hooks;
/* A producer channel's credit, loss and failure (ud: its subpartition). */
extern const struct fdx__chan_hooks fdx__dp_chan_hooks;

/* ---- data_conn.c ----------------------------------------------------------- */

/* A connection on fd; ROLE_IN receives into rx (RX_CAP bytes, freed with c), or its own if NULL. */
struct fdx__conn *fdx__conn_new(struct fdx__dp *dp, int fd, enum conn_role role, uint8_t *rx);
/* Close c (its operations complete with errors; freed after the last). */
void fdx__conn_kill(struct fdx__conn *c, int err, const char *why);
void fdx__conn_free(struct fdx__conn *c);
/* A part of the batch b (zeroed, no segment), or NULL if out of memory. */
struct txpart *fdx__txb_part(struct txb *b);
/* The header h as the next part of b: 0 or -ENOMEM. */
int fdx__txb_hdr(struct txb *b, const struct fdx__dhdr *h);
/* shm and tcp: a control frame (EVENT with its payload, ABORT, BACKLOG, CLOSE) batched. */
int fdx__conn_control(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *ev, uint32_t seq,
		      uint32_t backlog);
/* Start sending what was batched, if nothing is in flight. */
void fdx__conn_flush(struct fdx__conn *c);
void fdx__conn_on_send_done(struct fdx__conn *c, int res);
/* A receive of len bytes into buf. */
void fdx__conn_post_recv(struct fdx__conn *c, void *buf, uint32_t len);
/* The hello's next receive (a recvmsg: descriptors may come with it). */
void fdx__conn_post_hello_recv(struct fdx__conn *c);
void fdx__conn_on_hello(struct fdx__conn *c, int res);
void fdx__conn_on_recv(struct fdx__conn *c, int res);
/* The listening data sockets (dp->ufd, dp->tfd) and their endpoints: 0 or -errno. */
int fdx__dp_listen_unix(struct fdx__dp *dp, const char *path);
int fdx__dp_listen_tcp(struct fdx__dp *dp, const char *host);
/* 0, or -EBUSY if the ring had no room (the caller retries next round). */
int fdx__dp_post_accept(struct fdx__dp *dp, int fd, struct op *op);
void fdx__dp_on_accept(struct fdx__dp *dp, struct op *op, int res);
/*
 * The data socket to the peer at addr for link, of the session whose token pd
 * carries (and on shm, for region). Called without dp->lock: a new socket is
 * dialled without it (the loop goes on meanwhile). Returns with dp->lock held.
 */
int fdx__dp_get_conn(struct fdx__dp *dp, const char *addr, uint32_t link,
		     const struct fdx__peer_data *pd, const struct fdx_region *region,
		     struct fdx__conn **out);

/* ---- link_local.c ---------------------------------------------------------- */

/*
 * The local half of fdx_partition_connect(): s of p feeds channel gate_channel
 * of this process's gate gate. Takes dp->lock. 0, -ENOENT (no such gate or
 * channel) or what fdx__ichan_open() refused with.
 */
int fdx__local_connect(struct fdx__dp *dp, struct fdx_partition *p, struct fdx__sub *s,
		       uint32_t gate, uint32_t gate_channel);
/* Local credit from a consumer thread, queued for the loop (any thread): 0 or -ENOMEM. */
int fdx__local_credit_push(struct fdx__dp *dp, struct fdx_partition *p, uint64_t serial,
			   struct fdx__sub *s, uint32_t added, const uint64_t *offs, uint32_t n);
/* The loop applies the local credit queued: 1 if there was some. */
int fdx__local_credit_apply(struct fdx__dp *dp);

/* ---- link_shm.c ------------------------------------------------------------ */

extern const struct fdx__link_ops fdx__shm_link;
/* The region's announcement of an shm hello came (its memfd in c->hello_fd): map it. */
void fdx__shm_map_region(struct fdx__conn *c);
/* Every whole frame received in c->rx, then the next receive. */
void fdx__shm_parse(struct fdx__conn *c);

/* ---- link_tcp.c ------------------------------------------------------------ */

extern const struct fdx__link_ops fdx__tcp_link;
/* A whole header is in c->rx: check it, then receive its payload or the next header. */
void fdx__tcp_header(struct fdx__conn *c);
/* The payload of c->it is in: to its gate, then the next header. */
void fdx__tcp_payload_done(struct fdx__conn *c);
/* The tcp item being received goes nowhere: its segment back to its gate's pool. */
void fdx__tcp_item_drop(struct fdx__conn *c);

#endif /* FDX_TRANSPORT_DATAPLANE_PRIVATE_H */
