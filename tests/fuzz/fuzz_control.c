/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the control plane (transport/exchange.c) handling the frames
 * of a peer that may be hostile, on either end of a stream.
 *
 * The exchange serves nothing (fuzz_entry.h); gRPC is played by fakes.c:
 * each input's frames are delivered as gRPC would deliver the messages of
 * one stream, unpacked by the exchange itself and handed to its handlers on
 * what stands for the cq thread, between the calls its owner makes.
 *
 * config bit 0 = 0, session: a producer's stream to us (we serve it; its
 *   frames go to session_on_frame()). Gate 1 is a data-plane gate (made
 *   with fdx_gate_create() for each input: 4 channels, 2 exclusive credits,
 *   4 floating), gate 2 a plain one (fdx_exchange_add_gate(): 4 channels, 3
 *   credits, its news as events).
 * config bit 0 = 1, peer: our stream to a consumer (its frames go to
 *   peer_on_frame_locked()). Once its HelloAck came, (bits 4-5) + 1 channels
 *   are opened to gate 1, channels 0..3; with bit 3, channels 1 and 3 are
 *   hooked once open, as the data plane hooks them.
 * bits 1-2: how the stream ends: session: the producer half-closes (0, 1)
 *   or cancels (2, 3); peer: the consumer ends it with status OK,
 *   UNAVAILABLE, FAILED_PRECONDITION or CANCELLED.
 * bit 6: the peer reads what we sent before each of its frames.
 * bit 7: the owner polls events and takes gate 1's views after each frame.
 *
 * Then operations, each a byte whose low 3 bits say what:
 *   0 FRAME, 2 length bytes (LE) and the frame; 7 FRAME, 1 length byte.
 *   1 the peer reads what we sent.
 *   2 session: fdx_exchange_credit() [gate/channel] [added] [n] [n % 9 offset
 *     indexes]; peer: fdx_exchange_sent() [channel] [offset index].
 *   3 the owner polls events and takes gate 1's views (releasing them sends credit).
 *   4 session: the data socket of [channel] of gate 1 fails
 *     (fdx__exchange_drop_input()); peer: fdx_exchange_backlog() [channel] [backlog].
 *   5 session: gate 1 is destroyed and made again; peer: [channel] [what]:
 *     close, close with a CLOSE frame, the data socket fails, unhook, the
 *     opener gives up waiting, a hooked channel's loop sends [offset index]
 *     (spent in its ledger, as a subpartition's).
 *   6 the peer cancels the stream.
 *
 * Checked beyond the sanitizers (abort): what fakes.h checks of gRPC's
 * use; every frame we send is a ControlFrame, one HelloAck per session; a
 * plain gate's channel events alternate (opened, then closed or failed);
 * producer side: an offset handed back (hook or event) was in flight and is
 * handed back once, the ledger refuses exactly the offsets not in flight, a
 * failed or taken back hooked channel has nothing left in flight,
 * fdx_exchange_sent() refuses for want of credit exactly when the credit
 * granted is spent (and always on a partition's channel); and
 * once the stream ended, no session, peer or channel is left, and no input
 * channel of either gate stays open.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/fdx.h>

#include "runtime/input_gate.h"
#include "runtime/result_partition.h"
#include "transport/data_wire.h"
#include "runtime/credit_ledger.h"
#include "transport/exchange_internal.h"
#include "transport/fuzz_entry.h"

#include "fakes.h"

#define GATE_D 1u /* data-plane gate */
#define GATE_P 2u /* plain gate */
#define CHANNELS 4u
#define PEER_ADDR "unix:/nonexistent/fuzz-consumer.sock"
#define OFF(i) (4096ull * ((uint64_t)(i) + 1))
#define INFLIGHT_MAX 256u

enum pstate { P_NONE, P_OPENING, P_OPEN, P_DONE };

/* The producer's view of one of its channels (peer role). */
struct pch {
	enum pstate st;
	uint32_t id; /* the exchange's channel id */
	int waiting; /* its opener waits for the answer */
	int want_hook; /* hook it once open, as the data plane does */
	int hooked, hooking, was_hooked;
	struct fdx__credit_ledger led; /* a hooked channel's, as a subpartition's */
	uint64_t avail; /* credit: initial + granted - sent */
	uint64_t offs[INFLIGHT_MAX];
	uint32_t n;
};

static struct {
	struct fdx_exchange *ex;
	struct fz_call call;
	struct fdx_gate *gate;
	int plain_open[CHANNELS];
	struct pch ch[CHANNELS];
	int opened; /* the peer role began its opens */
	uint32_t hello_acks;
	uint64_t serial; /* session role: the session's name on the data plane, once greeted */
} W;

static void fatal(const char *what)
{
	fprintf(stderr, "fuzz_control: %s\n", what);
	abort();
}

static void check(int ok, const char *what)
{
	if (!ok)
		fatal(what);
}

/* ---- the producer's model ------------------------------------------------------ */

static struct pch *pch_of_id(uint32_t id)
{
	for (uint32_t i = 0; i < CHANNELS; i++)
		if (W.ch[i].st != P_NONE && W.ch[i].id == id)
			return &W.ch[i];
	return NULL;
}

static int pch_has(const struct pch *c, uint64_t off)
{
	for (uint32_t i = 0; i < c->n; i++)
		if (c->offs[i] == off)
			return 1;
	return 0;
}

static void pch_back(struct pch *c, uint32_t added, const uint64_t *offs, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i;

		for (i = 0; i < c->n && c->offs[i] != offs[k]; i++)
			;
		check(i < c->n, "an offset handed back that was not in flight");
		c->offs[i] = c->offs[--c->n];
	}
	if (!c->hooking)
		c->avail += added;
}

static int hook_credit(void *ud, uint32_t added, const uint64_t *offs, uint32_t n,
		       uint64_t written_ns, const struct fdx__credit_stamp *st, uint32_t *bad)
{
	(void)written_ns; /* a statistic of the subpartition's; the model has none */
	struct pch *c = ud;
	int err = fdx__ledger_grant(&c->led, added, offs, n, st, bad);

	if (err == 0)
		pch_back(c, added, offs, n);
	else if (err == -ENOENT)
		check(!pch_has(c, offs[*bad]), "the ledger refused an offset in flight");
	return err;
}

static void hook_take_back(void *ud)
{
	struct pch *c = ud;
	uint64_t offs[64];
	uint32_t k;

	while ((k = fdx__ledger_take_back(&c->led, offs, 64)) > 0)
		pch_back(c, 0, offs, k);
	check(c->n == 0, "taken back, and buffers still in flight");
}

static uint32_t hook_in_flight(void *ud)
{
	struct pch *c = ud;

	return fdx__ledger_in_flight(&c->led);
}

static void hook_failed(void *ud, int err, const char *msg)
{
	struct pch *c = ud;

	(void)msg;
	check(err < 0, "a channel failed without an error");
	check(c->n == 0, "a hooked channel failed with buffers still in flight");
	c->st = P_DONE;
}

static const struct fdx__chan_hooks hooks = {hook_credit, hook_take_back, hook_in_flight,
					     hook_failed};

/* ---- the owner ------------------------------------------------------------------------ */

static void poll_events(void)
{
	struct fdx_exchange_event ev[16];
	int n;

	while ((n = fdx_exchange_poll(W.ex, ev, 16)) > 0)
		for (int i = 0; i < n; i++) {
			const struct fdx_exchange_event *e = &ev[i];
			int *open = e->gate == GATE_P && e->gate_channel < CHANNELS
					    ? &W.plain_open[e->gate_channel]
					    : NULL;
			struct pch *c;

			switch (e->type) {
			case FDX_EV_CHANNEL_OPENED:
				check(open && !*open, "a channel opened twice");
				*open = 1;
				break;
			case FDX_EV_CHANNEL_CLOSED:
				check(open && *open, "a channel closed that was not open");
				*open = 0;
				break;
			case FDX_EV_BACKLOG:
				check(open && *open, "the backlog of a channel not open");
				break;
			case FDX_EV_CHANNEL_FAILED:
				if (e->channel) { /* producer side */
					c = pch_of_id(e->channel);
					check(c != NULL, "a channel failed that we never opened");
					check(!c->hooked, "a hooked channel's failure as an event");
					c->st = P_DONE;
					break;
				}
				check(open && *open, "a channel failed that was not open");
				*open = 0;
				break;
			case FDX_EV_CREDIT:
				c = pch_of_id(e->channel);
				check(c != NULL, "credit for a channel we never opened");
				check(!c->hooked, "credit as an event for a hooked channel");
				pch_back(c, e->credits, e->offsets, e->n_offsets);
				break;
			default:
				fatal("an unknown event");
			}
		}
}

static void take_views(void)
{
	struct fdx_view v;

	if (!W.gate)
		return;
	while (fdx_gate_next(W.gate, &v, 0) == 0)
		check(fdx_gate_release(W.gate, &v) == 0, "a view that does not release");
}

static void owner_round(void)
{
	poll_events();
	take_views();
}

static struct fdx_gate *gate_make(void)
{
	struct fdx_gate_opts o = {.size = sizeof(o),
				  .gate = GATE_D,
				  .n_channels = CHANNELS,
				  .exclusive_credits = 2,
				  .floating_credits = 4};
	struct fdx_gate *g;

	check(fdx_gate_create(W.ex, NULL, &o, &g) == 0, "no gate");
	return g;
}

static void on_frame(void *ud, struct fz_call *c, const Fdx__ControlFrame *f)
{
	(void)ud;
	(void)c;
	if (f->frame_case == FDX__CONTROL_FRAME__FRAME_HELLO_ACK)
		check(++W.hello_acks == 1, "two HelloAcks on one stream");
}

static void world_init(void)
{
	struct fdx_exchange_opts xo = {.size = sizeof(xo), .tm_id = "fuzz-tm"};

	fz_log_opts(&xo);
	check(fdx__fuzz_exchange_create(&xo, &W.ex) == 0, "no exchange");
	check(fdx_exchange_add_gate(W.ex, GATE_P, CHANNELS, 3) == 0, "no plain gate");
}

/* ---- the producer's owner (peer role) -------------------------------------------- */

static void opens_begin(uint32_t cfg)
{
	struct fdx__peer_data pd;
	uint32_t n = ((cfg >> 4) & 3) + 1;

	if (W.opened || fdx__exchange_peer_data(W.ex, PEER_ADDR, UINT32_MAX, &pd) < 0)
		return;
	W.opened = 1;
	for (uint32_t i = 0; i < n; i++) {
		check(fdx__fuzz_open_begin(W.ex, PEER_ADDR, GATE_D, i, &W.ch[i].id) == 0,
		      "an open that does not start");
		W.ch[i].st = P_OPENING;
		W.ch[i].waiting = 1;
		W.ch[i].want_hook = (cfg & 8) && (i & 1);
	}
}

/* Openers wake up: those answered (or, with give_up, every one) return. */
static void opens_end(int give_up)
{
	poll_events();
	for (uint32_t i = 0; i < CHANNELS; i++) {
		struct pch *c = &W.ch[i];
		uint32_t initial = 0;
		uint64_t avail;
		int err;

		if (!c->waiting)
			continue;
		err = fdx__fuzz_open_end(W.ex, c->id, give_up, &initial);
		if (err == -EAGAIN)
			continue;
		c->waiting = 0;
		if (err) {
			c->st = P_DONE;
			continue;
		}
		/* Credit granted since the answer may be counted already. */
		c->avail += initial;
		if (c->st != P_OPENING)
			continue; /* it failed already: the opener learns it next */
		c->st = P_OPEN;
		if (c->want_hook) {
			fdx__ledger_init(&c->led, 0);
			c->hooked = c->hooking = 1;
			err = fdx__exchange_hook_channel(W.ex, c->id, &hooks, c, &avail);
			c->hooking = 0;
			if (err)
				c->hooked = 0; /* it failed meanwhile */
			else
				check(avail == c->avail, "credit at hooking that was not granted");
			c->was_hooked = c->hooked;
		}
	}
}

static void peer_sent(struct pch *c, uint64_t off)
{
	int err = fdx_exchange_sent(W.ex, c->id, off);

	if (c->was_hooked) {
		/* Its credit is the partition's: refused while open, unknown once over. */
		check(err == -EINVAL || err == -ENOENT,
		      "fdx_exchange_sent() on a partition's channel");
		return;
	}
	if (err == 0) {
		check(c->st == P_OPEN && c->avail > 0, "sent without credit");
		check(!pch_has(c, off) && c->n < INFLIGHT_MAX, "an offset in flight twice");
		c->offs[c->n++] = off;
		c->avail--;
	} else if (err == -EAGAIN) {
		check(c->st == P_OPEN && c->avail == 0,
		      "refused for want of credit that was granted");
	} else if (err == -EEXIST) {
		check(c->st == P_OPEN && pch_has(c, off),
		      "refused as in flight an offset that is not");
	} else {
		check(c->st != P_OPEN, "an open channel refused a send");
	}
}

/* A hooked channel's loop sends a buffer: spent in its ledger, as a subpartition does. */
static void peer_loop_sends(struct pch *c, uint64_t off)
{
	int err;

	/* The loop sends only with credit, and never a slice that is still in flight. */
	if (!c->hooked || c->st != P_OPEN || !c->avail || pch_has(c, off) || c->n >= INFLIGHT_MAX)
		return;
	check(fdx__ledger_available(&c->led) > 0, "the ledger has less credit than was granted");
	err = fdx__ledger_spend(&c->led, off, 0);
	check(err == 0 || err == 1, "the ledger refused a send with credit");
	if (err == 0)
		c->offs[c->n++] = off;
	c->avail--;
}

static void peer_owner(uint32_t what, const uint8_t *a)
{
	struct pch *c = &W.ch[a[0] % CHANNELS];
	uint64_t off = OFF(a[1] % 64);
	uint32_t id = c->st == P_NONE ? 0x10000u + a[0] : c->id; /* none of ours: refused */

	poll_events(); /* what the exchange told is known before the owner acts */
	switch (what) {
	case 2:
		if (c->st == P_NONE)
			check(fdx_exchange_sent(W.ex, id, off) == -ENOENT, "sent on no channel");
		else
			peer_sent(c, off);
		break;
	case 4:
		fdx_exchange_backlog(W.ex, id, a[1]);
		break;
	default:
		switch (a[1] % 6) {
		case 0:
		case 1:
			if ((a[1] % 6 ? fdx__exchange_close_channel_data(W.ex, id)
				      : fdx_exchange_close_channel(W.ex, id)) == 0)
				c->st = P_DONE;
			break;
		case 2:
			fdx__exchange_fail_channel(W.ex, id);
			if (c->st == P_OPEN) {
				c->st = P_DONE;
				if (c->hooked)
					check(c->n == 0,
					      "a failed hooked channel kept buffers in flight");
			}
			break;
		case 3:
			fdx__exchange_unhook_channel(W.ex, id);
			c->hooked = 0;
			break;
		case 4:
			if (c->waiting)
				opens_end(1);
			break;
		default:
			if (c->st != P_NONE)
				peer_loop_sends(c, off);
			break;
		}
		break;
	}
}

/* ---- the consumer's owner (session role) ----------------------------------------- */

static void session_owner(uint32_t what, const uint8_t *a, uint32_t alen)
{
	uint32_t gate = (a[0] & 0x10) ? GATE_P : GATE_D, gch = a[0] & 3;

	switch (what) {
	case 2: {
		uint64_t offs[8];
		uint32_t n = alen > 3 ? alen - 3 : 0;

		for (uint32_t i = 0; i < n; i++)
			offs[i] = OFF(a[3 + i] % 64);
		fdx_exchange_credit(W.ex, gate, gch, a[1], offs, n);
		break;
	}
	case 4: {
		char peer[64];
		uint64_t sess = 0;

		if (fdx__exchange_token_session(W.ex, fz_token, &sess, peer, sizeof(peer)) == 0)
			fdx__exchange_drop_input(W.ex, GATE_D, gch, sess, FDX_EPROTO,
						 "fuzz: its data socket failed");
		break;
	}
	default:
		take_views();
		fdx_gate_destroy(W.gate);
		W.gate = gate_make();
		break;
	}
}

/* ---- one input ---------------------------------------------------------------------- */

/* The argument bytes of operation op at a (avail there): session credit has a variable count. */
static uint32_t op_args(uint32_t op, int peer_role, const uint8_t *a, size_t avail)
{
	uint32_t n;

	if (op == 2 && !peer_role)
		n = avail >= 3 ? 3 + a[2] % 9u : 3;
	else
		n = op == 2 || op == 4 || op == 5 ? 2 : 0;
	return n < avail ? n : (uint32_t)avail;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const grpc_status_code ends[] = {GRPC_STATUS_OK, GRPC_STATUS_UNAVAILABLE,
						GRPC_STATUS_FAILED_PRECONDITION,
						GRPC_STATUS_CANCELLED};
	uint32_t cfg, pos = 1;
	int peer_role;

	if (!W.ex)
		world_init();
	if (size < 1)
		return 0;
	cfg = data[0];
	peer_role = cfg & 1;
	for (uint32_t i = 0; i < CHANNELS; i++)
		fdx__ledger_fini(&W.ch[i].led);
	memset(W.ch, 0, sizeof(W.ch));
	W.opened = 0;
	W.serial = 0;
	W.hello_acks = 0;
	fz_call_init(&W.call, peer_role, on_frame, NULL);
	if (peer_role) {
		check(fdx__fuzz_peer_start(W.ex, PEER_ADDR, fz_grpc(&W.call)) == 0, "no peer");
	} else {
		W.gate = gate_make();
		fdx__fuzz_session_start(W.ex, fz_grpc(&W.call));
	}

	while (pos < size) {
		uint32_t op = data[pos] & 7, len, alen;
		const uint8_t *a;

		pos++;
		if (op == 0 || op == 7) {
			uint32_t hl = op == 0 ? 2 : 1;

			if (size - pos < hl)
				break;
			len = data[pos] | (op == 0 ? (uint32_t)data[pos + 1] << 8 : 0);
			pos += hl;
			if (len > size - pos)
				len = (uint32_t)(size - pos);
			if (cfg & 0x40)
				fz_sends(W.ex, &W.call);
			fz_deliver(W.ex, &W.call, data + pos, len);
			pos += len;
			if (cfg & 0x80)
				owner_round();
		} else if (op == 1) {
			fz_sends(W.ex, &W.call);
		} else if (op == 3) {
			owner_round();
		} else if (op == 6) {
			fz_end(W.ex, &W.call, FZ_END_CANCEL);
		} else {
			uint8_t args[16] = {0};

			a = data + pos;
			alen = op_args(op, peer_role, a, size - pos);
			memcpy(args, a, alen);
			pos += alen;
			if (peer_role)
				peer_owner(op, args);
			else
				session_owner(op, args, alen);
		}
		fz_settle(W.ex, &W.call);
		if (peer_role) {
			opens_begin(cfg);
			opens_end(0);
		} else if (!W.serial) {
			char peer[64];

			fdx__exchange_token_session(W.ex, fz_token, &W.serial, peer, sizeof(peer));
		}
	}

	/* The stream ends; the openers still waiting give up; the owner takes what is left. */
	if (peer_role) {
		W.call.status = ends[(cfg >> 1) & 3];
		fz_end(W.ex, &W.call,
		       W.call.status == GRPC_STATUS_CANCELLED ? FZ_END_CANCEL : FZ_END_STATUS);
		opens_end(1);
	} else {
		fz_end(W.ex, &W.call, (cfg & 4) ? FZ_END_CANCEL : FZ_END_HALF_CLOSE);
		/*
		 * The producer's data socket ends with it: a channel it closed with
		 * a CLOSE frame to come is let go then (without any data socket it
		 * would stay taken: see the report of issue 6).
		 */
		if (W.serial) {
			struct fdx__conn *c = fdx__fuzz_conn_open(fdx__exchange_dp(W.ex),
								  FDX_LINK_TCP, W.serial, NULL);

			check(c && fdx__fuzz_conn_close(c) == 0, "a connection outlived its close");
		}
	}
	check(W.call.head == NULL && W.call.unrefd, "a stream that did not end");
	owner_round();
	check(fdx__fuzz_exchange_idle(W.ex) == 0, "a session, peer or channel outlived its stream");
	for (uint32_t i = 0; i < CHANNELS; i++) {
		check(!W.plain_open[i], "a plain gate's channel still open after its stream");
		if (W.gate)
			check(atomic_load(&W.gate->ch[i].sess) == 0,
			      "a data-plane gate's channel still open after its stream");
	}
	if (W.gate) {
		fdx_gate_destroy(W.gate);
		W.gate = NULL;
	}
	return 0;
}
