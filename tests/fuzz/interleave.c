/* SPDX-License-Identifier: MIT */
/*
 * Control-plane interleavings the public API cannot force, replayed exactly
 * (built with the fuzz targets, on the same fakes: fakes.h): each case
 * delivers a peer's frames one by one between the owner's calls and checks
 * what the exchange sent and decided. Run by tests/fuzz/run.sh before the
 * fuzzers; exits 1 on the first case that fails, naming it.
 *
 *   fdx-fuzz-interleave [CASE]      every case, or the one named
 *
 *  open-dropped-then-confirmed: our open is answered, the consumer's gate
 *    goes (Error) and it confirms our close (ChannelClosed), all before the
 *    opener wakes: the stream lives, the opener gets FDX_EPEERGONE, nothing
 *    is left. (The confirmation used to fail the stream.)
 *  credit-of-an-earlier-opening: the consumer holds a view of opening 1 of
 *    gate channel 0 when the same stream closes it and opens it again
 *    (id 2); releasing the view must not send its credit and offset under
 *    id 2. (It did; the producer then failed the stream.)
 *  credit-after-the-reopening-was-taken: the same, the consumer having taken
 *    the reopening first (its buffers carried no opening: they were credited
 *    to the new one). In both, a buffer of the new opening is credited to it.
 *  backlog-then-dropped: a backlog waits for the stream while the consumer
 *    drops the channel (Error): our close goes, the backlog naming it does
 *    not. (It followed the close; the consumer failed the stream.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/fdx.h>

#include "runtime/input_gate.h"
#include "runtime/result_partition.h"
#include "transport/data_wire.h"
#include "transport/exchange_internal.h"
#include "transport/fuzz_entry.h"

#include "fakes.h"

#define ADDR "unix:/nonexistent/interleave-consumer.sock"

static const char *current;

static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "interleave: %s: FAILED: ", current);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define CHECK(cond, ...)                   \
	do {                               \
		if (!(cond))               \
			fail(__VA_ARGS__); \
	} while (0)

/* What the exchange sent, in order: the frame cases and a few of their fields. */
struct sent {
	uint32_t n;
	struct {
		int kind;
		uint32_t channel; /* CLOSE, CLOSED, BACKLOG (first), CREDIT (first) */
		uint64_t offset; /* CREDIT: its first returned offset, 0 if none */
	} f[64];
};

static void on_frame(void *ud, struct fz_call *c, const Fdx__ControlFrame *f)
{
	struct sent *s = ud;
	uint32_t i = s->n;

	(void)c;
	if (i == 64)
		fail("more than 64 frames sent");
	s->n++;
	s->f[i].kind = f->frame_case;
	s->f[i].channel = 0;
	s->f[i].offset = 0;
	switch (f->frame_case) {
	case FDX__CONTROL_FRAME__FRAME_CLOSE:
		s->f[i].channel = f->close->channel;
		break;
	case FDX__CONTROL_FRAME__FRAME_CLOSED:
		s->f[i].channel = f->closed->channel;
		break;
	case FDX__CONTROL_FRAME__FRAME_BACKLOG:
		if (f->backlog->n_channels)
			s->f[i].channel = f->backlog->channels[0];
		break;
	case FDX__CONTROL_FRAME__FRAME_CREDIT:
		if (f->credit->n_credits) {
			s->f[i].channel = f->credit->credits[0]->channel;
			if (f->credit->credits[0]->n_returned_offsets)
				s->f[i].offset = f->credit->credits[0]->returned_offsets[0];
		}
		break;
	default:
		break;
	}
}

/* Index of the first frame of kind (naming channel, unless 0) sent from 'from' on; -1 if none. */
static int sent_find(const struct sent *s, uint32_t from, int kind, uint32_t channel)
{
	for (uint32_t i = from; i < s->n; i++)
		if (s->f[i].kind == kind && (!channel || s->f[i].channel == channel))
			return (int)i;
	return -1;
}

static void deliver(struct fdx_exchange *ex, struct fz_call *c, const Fdx__ControlFrame *f)
{
	size_t n = fdx__control_frame__get_packed_size(f);
	uint8_t *b = malloc(n ? n : 1);

	CHECK(b, "out of memory");
	fdx__control_frame__pack(f, b);
	CHECK(fz_deliver(ex, c, b, n), "no receive was posted for the peer's frame");
	free(b);
	fz_settle(ex, c);
}

static struct fdx_exchange *exchange(void)
{
	struct fdx_exchange_opts o = {.size = sizeof(o), .tm_id = "interleave"};
	struct fdx_exchange *ex;

	fz_log_opts(&o);
	CHECK(fdx__fuzz_exchange_create(&o, &ex) == 0, "exchange not created");
	return ex;
}

static uint64_t bad_frames(struct fdx_exchange *ex)
{
	struct fdx_exchange_stats st = {.size = sizeof(st)};

	fdx_exchange_stats(ex, &st);
	return st.bad_frames;
}

/* Our stream to a consumer, answered: the producer's side. */
static void peer_up(struct fdx_exchange *ex, struct fz_call *c, struct sent *s)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__HelloAck a = FDX__HELLO_ACK__INIT;
	uint8_t tok[16] = {1};

	fz_call_init(c, 1, on_frame, s);
	CHECK(fdx__fuzz_peer_start(ex, ADDR, fz_grpc(c)) == 0, "peer not started");
	fz_settle(ex, c);
	a.protocol_version = FDX_PROTOCOL_VERSION;
	a.taskmanager_id = "consumer";
	a.link = FDX__LINK__LINK_TCP;
	a.token.data = tok;
	a.token.len = sizeof(tok);
	a.data_endpoint = "";
	a.tcp_data_endpoint = "";
	f.frame_case = FDX__CONTROL_FRAME__FRAME_HELLO_ACK;
	f.hello_ack = &a;
	deliver(ex, c, &f);
	fz_sends(ex, c);
}

static void open_ack(struct fdx_exchange *ex, struct fz_call *c, uint32_t id)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__OpenChannelAck a = FDX__OPEN_CHANNEL_ACK__INIT;

	a.id = id;
	a.initial_credit = 2;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_OPEN_ACK;
	f.open_ack = &a;
	deliver(ex, c, &f);
}

static void gate_gone(struct fdx_exchange *ex, struct fz_call *c, uint32_t id)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Error e = FDX__ERROR__INIT;

	e.code = -ENOENT;
	e.message = "gate 1 is gone";
	e.channel = id;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_ERROR;
	f.error = &e;
	deliver(ex, c, &f);
}

static void producer_end(struct fdx_exchange *ex, struct fz_call *c)
{
	c->status = GRPC_STATUS_OK;
	fz_end(ex, c, FZ_END_STATUS);
	CHECK(fdx__fuzz_exchange_idle(ex) == 0, "channels or peers left after the stream ended");
	fdx_exchange_destroy(ex);
}

static void open_dropped_then_confirmed(void)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__ChannelClosed cc = FDX__CHANNEL_CLOSED__INIT;
	struct fdx_exchange *ex = exchange();
	struct fz_call c;
	struct sent s = {0};
	uint32_t id = 0, initial = 0;
	int rc;

	current = "open-dropped-then-confirmed";
	peer_up(ex, &c, &s);
	CHECK(fdx__fuzz_open_begin(ex, ADDR, 1, 0, &id) == 0, "open not begun");
	fz_sends(ex, &c);
	open_ack(ex, &c, id);
	gate_gone(ex, &c, id);
	fz_sends(ex, &c);
	CHECK(sent_find(&s, 0, FDX__CONTROL_FRAME__FRAME_CLOSE, id) >= 0,
	      "no close answered the consumer's Error");
	cc.channel = id;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CLOSED;
	f.closed = &cc;
	deliver(ex, &c, &f);
	CHECK(bad_frames(ex) == 0 && !c.over, "the confirmation failed the stream");
	rc = fdx__fuzz_open_end(ex, id, 0, &initial);
	CHECK(rc == FDX_EPEERGONE, "the opener got %d, not FDX_EPEERGONE", rc);
	producer_end(ex, &c);
}

static void backlog_then_dropped(void)
{
	struct fdx_exchange *ex = exchange();
	struct fz_call c;
	struct sent s = {0};
	uint32_t id = 0, initial = 0, mark;
	int close_at, backlog_at;

	current = "backlog-then-dropped";
	peer_up(ex, &c, &s);
	CHECK(fdx__fuzz_open_begin(ex, ADDR, 1, 0, &id) == 0, "open not begun");
	/* Its OpenChannel is still in flight (unread): the backlog must wait. */
	open_ack(ex, &c, id);
	CHECK(fdx__fuzz_open_end(ex, id, 0, &initial) == 0, "open failed");
	CHECK(fdx_exchange_backlog(ex, id, 5) == 0, "backlog refused");
	mark = s.n;
	gate_gone(ex, &c, id);
	fz_sends(ex, &c);
	close_at = sent_find(&s, mark, FDX__CONTROL_FRAME__FRAME_CLOSE, id);
	backlog_at = sent_find(&s, mark, FDX__CONTROL_FRAME__FRAME_BACKLOG, id);
	CHECK(close_at >= 0, "no close answered the consumer's Error");
	CHECK(backlog_at < 0 || backlog_at < close_at,
	      "a backlog naming channel %u followed its close", id);
	producer_end(ex, &c);
}

static struct fdx__gitem *gitem(uint32_t kind, uint64_t sess, uint64_t opening)
{
	struct fdx__gitem *it = calloc(1, sizeof(*it) + 8);

	CHECK(it, "out of memory");
	it->kind = (uint8_t)kind;
	it->sess = sess;
	it->opening = opening;
	it->data = it->payload;
	return it;
}

static void open_frame(struct fdx_exchange *ex, struct fz_call *c, uint32_t id)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__OpenChannel o = FDX__OPEN_CHANNEL__INIT;

	o.id = id;
	o.partition_id = "p";
	o.gate = 1;
	o.gate_channel = 0;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_OPEN;
	f.open = &o;
	deliver(ex, c, &f);
}

/*
 * taken_first: the consumer took the reopening (next() ran) before it let the
 * old view go; else it let it go first. Either way no credit of the old view
 * may reach the new opening, and a buffer of the new opening is credited.
 */
static void credit_across_a_reopening(int taken_first)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Hello h = FDX__HELLO__INIT;
	Fdx__CloseChannel cl = FDX__CLOSE_CHANNEL__INIT;
	struct fdx_gate_opts o = {
		.size = sizeof(o), .gate = 1, .n_channels = 4, .exclusive_credits = 2};
	struct fdx_exchange *ex = exchange();
	struct fdx__gitem *b, *e;
	struct fdx_view vb, ve, v;
	struct fdx_gate *g;
	struct fz_call c;
	struct sent s = {0};
	uint64_t sess = 0, opening;
	uint32_t mark;
	char peer[64];
	int at;

	CHECK(fdx_gate_create(ex, NULL, &o, &g) == 0, "gate not created");
	fz_call_init(&c, 0, on_frame, &s);
	fdx__fuzz_session_start(ex, fz_grpc(&c));
	h.protocol_version = FDX_PROTOCOL_VERSION;
	h.taskmanager_id = "producer";
	h.boot_id = "another-host";
	f.frame_case = FDX__CONTROL_FRAME__FRAME_HELLO;
	f.hello = &h;
	deliver(ex, &c, &f);
	CHECK(fdx__exchange_token_session(ex, fz_token, &sess, peer, sizeof(peer)) == 0,
	      "no session for the token");
	open_frame(ex, &c, 1);
	fz_sends(ex, &c);
	/* What the loop pushes for opening 1: a buffer (as shm: an offset), then the end. */
	opening = atomic_load(&g->ch[0].opening);
	b = gitem(FDX__GI_BUFFER, sess, opening);
	b->link_type = FDX_LINK_SHM;
	b->offset = 0x5000;
	fdx__gate_push(g, b);
	e = gitem(FDX__GI_EVENT, sess, opening);
	e->event_type = FDX_EVENT_END_OF_PARTITION;
	fdx__gate_push(g, e);
	CHECK(fdx_gate_next(g, &vb, 0) == 0 && vb.kind == FDX_VIEW_BUFFER, "no buffer view");
	CHECK(fdx_gate_next(g, &ve, 0) == 0 && ve.kind == FDX_VIEW_EVENT, "no end view");
	CHECK(fdx_gate_release(g, &ve) == 0, "end view not released");
	fz_sends(ex, &c);
	/* The producer closes channel 1 and opens gate channel 0 again as id 2. */
	cl.channel = 1;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CLOSE;
	f.close = &cl;
	deliver(ex, &c, &f);
	open_frame(ex, &c, 2);
	fz_sends(ex, &c);
	mark = s.n;
	if (taken_first)
		CHECK(fdx_gate_next(g, &v, 0) == -EAGAIN, "a view came with the reopening");
	CHECK(fdx_gate_release(g, &vb) == 0, "buffer view not released");
	CHECK(fdx_gate_next(g, &v, 0) == -EAGAIN, "a view came"); /* flushes credit */
	fz_sends(ex, &c);
	at = sent_find(&s, mark, FDX__CONTROL_FRAME__FRAME_CREDIT, 2);
	CHECK(at < 0 || s.f[at].offset != 0x5000,
	      "the view of opening 1 was credited to channel 2 (offset %#llx)",
	      (unsigned long long)s.f[at].offset);
	CHECK(bad_frames(ex) == 0 && !c.over, "the stream failed");
	/* A buffer of the new opening is credited to it, offset and all. */
	opening = atomic_load(&g->ch[0].opening);
	b = gitem(FDX__GI_BUFFER, sess, opening);
	b->link_type = FDX_LINK_SHM;
	b->offset = 0x6000;
	fdx__gate_push(g, b);
	CHECK(fdx_gate_next(g, &vb, 0) == 0 && vb.kind == FDX_VIEW_BUFFER, "no buffer view");
	mark = s.n;
	CHECK(fdx_gate_release(g, &vb) == 0, "buffer view not released");
	CHECK(fdx_gate_next(g, &v, 0) == -EAGAIN, "a view came"); /* flushes credit */
	fz_sends(ex, &c);
	at = sent_find(&s, mark, FDX__CONTROL_FRAME__FRAME_CREDIT, 2);
	CHECK(at >= 0 && s.f[at].offset == 0x6000,
	      "the new opening's buffer was not credited to channel 2");
	fz_end(ex, &c, FZ_END_HALF_CLOSE);
	fdx_gate_destroy(g);
	fdx_exchange_destroy(ex);
}

static void credit_of_an_earlier_opening(void)
{
	current = "credit-of-an-earlier-opening";
	credit_across_a_reopening(0);
}

static void credit_after_the_reopening_was_taken(void)
{
	current = "credit-after-the-reopening-was-taken";
	credit_across_a_reopening(1);
}

static const struct {
	const char *name;
	void (*fn)(void);
} cases[] = {
	{"open-dropped-then-confirmed", open_dropped_then_confirmed},
	{"credit-of-an-earlier-opening", credit_of_an_earlier_opening},
	{"credit-after-the-reopening-was-taken", credit_after_the_reopening_was_taken},
	{"backlog-then-dropped", backlog_then_dropped},
};

/* fdx-fuzz-interleave [CASE]: every case, or the one named. */
int main(int argc, char **argv)
{
	int n = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)
			continue;
		cases[i].fn();
		n++;
	}
	if (n == 0) {
		fprintf(stderr, "interleave: no case named %s\n", argv[1]);
		return 2;
	}
	printf("interleave: %d case%s passed\n", n, n == 1 ? "" : "s");
	return 0;
}
