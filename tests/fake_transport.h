/* SPDX-License-Identifier: MIT */
/*
 * A fake transport for the credit protocol of runtime/: it fills in
 * runtime/port.h (struct fdx__port_ops and two struct fdx__link_ops) with no
 * socket, no gRPC, no io_uring and no thread, so that a test drives every
 * step by hand and sees every call the protocol makes.
 *
 * - The sender runs only in fake_pump(): it takes the subpartitions the
 *   protocol made ready, in order, and calls fdx__sub_pump() on each.
 * - Credit the gate announces (announce, local_credit) and channels it drops
 *   (drop_input) are recorded, in order, as control messages; they reach the
 *   producer only in fake_deliver_credit(): the test chooses the interleaving.
 * - connect wires a subpartition to a gate of the same fake exchange (addr:
 *   ex->port.address; FDX_LINK_TCP is -EOPNOTSUPP). Over FDX_LINK_SHM (also
 *   what FDX_LINK_AUTO means here) each frame goes as a remote shm link's would:
 *   through fdx__ichan_accept() first, then as a struct fdx__gitem whose offset
 *   comes back with the credit; the gate's channel is opened with
 *   fdx__ichan_open() and the exclusive credit comes with the answer, into the
 *   ledger. FDX_LINK_LOCAL hands items over as the local link does.
 * - fake_open_raw() and fake_inject() play a producer that lies: frames
 *   are made by hand (beyond credit, out of sequence) and checked exactly as
 *   the shm link checks its producer's.
 * - A frame fdx__ichan_accept() refuses kills the link as the transport kills
 *   the connection (at the end of that fake_pump()): the gate's channel fails
 *   (fdx__ichan_fail()) and the producer's too, its buffers taken back.
 *
 * One region serves both sides: the consumer reads the producer's segments
 * where they are, as it would through its read-only mapping.
 */
#ifndef FDX_TESTS_FAKE_TRANSPORT_H
#define FDX_TESTS_FAKE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/input_gate.h"
#include "runtime/log.h"
#include "runtime/port.h"
#include "runtime/result_partition.h"

#define FAKE_MAX_PARTS 16
#define FAKE_MAX_GATES 16
#define FAKE_MAX_LINKS 64
#define FAKE_MAX_READY 256
#define FAKE_MAX_FRAMES 2048
#define FAKE_MAX_CTL 512
#define FAKE_MAX_OFFS 128
#define FAKE_WHY 200

/* One frame the sending half of a link was given, or one injected by the test. */
struct fake_frame {
	uint32_t kind; /* FDX__GI_BUFFER, _EVENT, _ABORT, _BACKLOG or _CLOSED */
	uint32_t link; /* FDX_LINK_SHM or FDX_LINK_LOCAL */
	uint32_t gate, ch;
	uint64_t sess;
	uint32_t seq, backlog;
	uint64_t off; /* BUFFER: the slice's offset in the region */
	uint32_t len;
	uint32_t event_type; /* EVENT */
	uint16_t flags; /* EVENT: FDX_EVENT_PRIORITY */
	/* BUFFER: the credit it went under (runtime/credit_proof.h). */
	struct fdx__credit_stamp st;
	int stamped; /* fake_inject(): st is the test's, not the raw producer's latest */
	int accepted; /* fdx__ichan_accept(): 1, 0 (dropped) or -1 (refused); local: 1 */
	char why[FAKE_WHY]; /* why it was refused */
};

enum fake_ctl_kind {
	FAKE_CTL_CREDIT = 1, /* announce: credit for a remote producer */
	FAKE_CTL_LOCAL_CREDIT = 2, /* local_credit */
	FAKE_CTL_DROP = 3, /* drop_input */
};

/* One message from the gate's side to a producer: announce, local_credit or drop_input. */
struct fake_ctl {
	uint32_t kind; /* enum fake_ctl_kind */
	uint32_t gate, ch;
	uint64_t sess, opening;
	struct fdx_partition *p; /* LOCAL_CREDIT */
	uint64_t serial; /* LOCAL_CREDIT: p's serial, as the gate knew it */
	struct fdx__sub *s;
	uint32_t added;
	uint32_t n; /* offsets handed back */
	uint64_t offs[FAKE_MAX_OFFS];
	int code; /* DROP */
	char msg[FAKE_WHY];
	int port_ret; /* what the port op returned: 0, or -ENOENT (that opening is over) */
	uint64_t written_ns; /* CREDIT, LOCAL_CREDIT: when it was written, as a session stamps it */
	uint64_t total; /* CREDIT: the granted total it names (0: none), and its proof */
	uint32_t proof;
	int delivered; /* fake_deliver_credit() took it */
	int result; /* its fdx__sub_credit()'s answer; 0 if it reached no producer */
	int reached; /* it reached a producer */
};

/* A channel the fake opened: a subpartition (or a raw producer) wired to a gate's channel. */
struct fake_link {
	struct fdx_partition *p; /* NULL for a raw producer */
	struct fdx__sub *s;
	struct fdx_gate *g;
	uint32_t ch;
	uint32_t link; /* FDX_LINK_SHM or FDX_LINK_LOCAL */
	uint64_t sess, opening;
	/* A raw producer: the credit it was last given (its exclusive credit, then each CREDIT's). */
	struct fdx__credit_stamp st;
	int gone; /* its producer or its gate went: nothing goes through it any more */
	int killed; /* a frame was refused: the connection dies at the end of the pump */
	char why[FAKE_WHY];
};

struct fdx_exchange {
	struct fdx__port port; /* first: runtime/ reaches the fake through fdx__port_of() */
	struct fdx__log log;
	/* The log, captured. */
	int log_errors, log_warnings;
	char log_last[512];
	/* The session of the next shm connect (a session is a peer's stream: 2, 3, ...). */
	uint64_t sess;
	struct fdx_partition *parts[FAKE_MAX_PARTS];
	uint32_t n_parts;
	struct fdx_gate *gates[FAKE_MAX_GATES];
	uint32_t n_gates;
	struct fake_link links[FAKE_MAX_LINKS];
	uint32_t n_links;
	/* The sender's queue of ready subpartitions (s->ready set while queued). */
	struct fdx__sub *readyq[FAKE_MAX_READY];
	uint32_t n_readyq;
	/* What the protocol called. */
	uint32_t n_ready, n_kicks, n_attach, n_detach, n_gate_attach, n_gate_detach;
	struct fake_frame frames[FAKE_MAX_FRAMES];
	uint32_t n_frames;
	struct fake_ctl ctl[FAKE_MAX_CTL];
	uint32_t n_ctl;
	uint32_t ctl_next; /* the next one fake_deliver_credit() takes */
	/* n > 0: the n-th buffer the shm link is given from now on fails with -ENOMEM, once. */
	uint32_t fail_buffer_in;
};

/* A fake exchange, or NULL if out of memory. Sessions start at 2. */
struct fdx_exchange *fake_exchange_create(void);
/* Free it: every partition and gate must have been destroyed first. NULL is a no-op. */
void fake_exchange_destroy(struct fdx_exchange *ex);

/*
 * The sender: pump each ready subpartition (fdx__sub_pump()) until none is
 * ready, then kill the links whose frames were refused. The number of pumps
 * that did something.
 */
int fake_pump(struct fdx_exchange *ex);
/* The sender's clock: fdx__part_tick(p, now) for each partition. */
void fake_tick(struct fdx_exchange *ex, uint64_t now);
/*
 * The control stream: every message not delivered yet, in order, reaches
 * its producer (credit through fdx__sub_credit() if its link is still that
 * opening's and its partition alive; a drop fails the producer's channel).
 * The number of messages taken.
 */
int fake_deliver_credit(struct fdx_exchange *ex);

/*
 * A producer with no subpartition behind it (a peer that lies): open channel
 * ch of g to session sess over shm, its exclusive credit granted. 0 with
 * *opening set, or fdx__ichan_open()'s error.
 */
int fake_open_raw(struct fdx_exchange *ex, struct fdx_gate *g, uint32_t ch, uint64_t sess,
		  uint64_t *opening);
/*
 * A frame of a raw producer (f: kind, ch, sess, seq, backlog, off, len,
 * event_type, flags), checked by fdx__ichan_accept() and pushed to g if
 * accepted; data: a buffer's bytes (f->len of them, the test's), an event's
 * payload. A buffer goes with the raw producer's latest stamp unless
 * f->stamped (then f->st, the test's). Recorded; returns what accept answered (-1 with f->why set: the
 * link dies at the next fake_pump(), as the connection would).
 */
int fake_inject(struct fdx_exchange *ex, struct fdx_gate *g, struct fake_frame *f,
		const void *data);

/* The link subpartition sub of p is connected through, or NULL. */
struct fake_link *fake_link_of(struct fdx_exchange *ex, struct fdx_partition *p, uint32_t sub);
/* How many frames of kind (FDX__GI_*) went to channel ch of gate; kind 0 counts every frame. */
uint32_t fake_count_frames(const struct fdx_exchange *ex, uint32_t gate, uint32_t ch,
			   uint32_t kind);
/* The i-th frame (from 0) of kind to channel ch of gate, or NULL. */
const struct fake_frame *fake_nth_frame(const struct fdx_exchange *ex, uint32_t gate, uint32_t ch,
					uint32_t kind, uint32_t i);
/* How many control messages of kind (enum fake_ctl_kind) were recorded for channel ch of gate. */
uint32_t fake_count_ctl(const struct fdx_exchange *ex, uint32_t gate, uint32_t ch, uint32_t kind);
/* The last control message of kind for channel ch of gate, or NULL. */
const struct fake_ctl *fake_last_ctl(const struct fdx_exchange *ex, uint32_t gate, uint32_t ch,
				     uint32_t kind);

#endif /* FDX_TESTS_FAKE_TRANSPORT_H */
