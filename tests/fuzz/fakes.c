/* SPDX-License-Identifier: MIT */
/* gRPC's side of the control streams, getrandom and eventfd, played in memory: see fakes.h. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/types.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>

#include <fdx/exchange.h>

#include "transport/fuzz_entry.h"

#include "fakes.h"

#define FZ_MAGIC 0x66616b65u
#define FZ_OPS_MAX 8u
#define FZ_ROUNDS_MAX 100000u /* completions in one settling: more is a stream that never ends */

enum fz_kind { FZ_SEND = 1, FZ_RECV, FZ_CLOSE, FZ_STATUS };

struct fz_batch {
	enum fz_kind kind;
	int has_msg; /* a SEND_MESSAGE, or a RECV_MESSAGE */
	int has_status; /* SEND_STATUS_FROM_SERVER */
	grpc_op ops[FZ_OPS_MAX];
	size_t n;
	void *tag;
	struct fz_batch *next;
};

const uint8_t fz_token[16] = "fdx-fuzz-token!!";

static void fz_fatal(const char *what)
{
	fprintf(stderr, "fake gRPC: %s\n", what);
	abort();
}

/* ---- the wrapped gRPC and libc functions ------------------------------------ */

grpc_call_error __wrap_grpc_call_start_batch(grpc_call *call, const grpc_op *ops, size_t nops,
					     void *tag, void *reserved);
grpc_call_error __wrap_grpc_call_cancel(grpc_call *call, void *reserved);
grpc_call_error __wrap_grpc_call_cancel_with_status(grpc_call *call, grpc_status_code status,
						    const char *description, void *reserved);
void __wrap_grpc_call_unref(grpc_call *call);
ssize_t __wrap_getrandom(void *buf, size_t len, unsigned int flags);
int __wrap_eventfd(unsigned int initval, int flags);
int __real_eventfd(unsigned int initval, int flags);

static struct fz_call *fz_of(grpc_call *call)
{
	struct fz_call *c = (struct fz_call *)(void *)call;

	if (!c || c->magic != FZ_MAGIC)
		fz_fatal("a call that is not ours (the fuzzers have no real one)");
	if (c->unrefd)
		fz_fatal("a call used after grpc_call_unref()");
	return c;
}

/* A frame we send: it must be a ControlFrame; the target sees it. */
static void fz_inspect(struct fz_call *c, grpc_byte_buffer *bb)
{
	grpc_byte_buffer_reader r;
	Fdx__ControlFrame *f;
	grpc_slice s;

	if (!bb || !grpc_byte_buffer_reader_init(&r, bb))
		fz_fatal("a message that is no byte buffer");
	s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	f = fdx__control_frame__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
	grpc_slice_unref(s);
	if (!f)
		fz_fatal("sent a message that is not a ControlFrame");
	c->frames_sent++;
	if (c->on_frame)
		c->on_frame(c->ud, c, f);
	fdx__control_frame__free_unpacked(f, NULL);
}

grpc_call_error __wrap_grpc_call_start_batch(grpc_call *call, const grpc_op *ops, size_t nops,
					     void *tag, void *reserved)
{
	struct fz_call *c = fz_of(call);
	struct fz_batch *b;

	(void)reserved;
	if (nops == 0 || nops > FZ_OPS_MAX)
		fz_fatal("a batch of no or too many operations");
	b = calloc(1, sizeof(*b));
	if (!b)
		fz_fatal("out of memory");
	memcpy(b->ops, ops, nops * sizeof(*ops));
	b->n = nops;
	b->tag = tag;
	for (size_t i = 0; i < nops; i++) {
		switch (ops[i].op) {
		case GRPC_OP_SEND_INITIAL_METADATA:
			if (c->sent_md++)
				fz_fatal("initial metadata sent twice");
			b->kind = FZ_SEND;
			break;
		case GRPC_OP_SEND_MESSAGE:
			if (c->send_busy)
				fz_fatal("a second message sent while one is in flight");
			fz_inspect(c, ops[i].data.send_message.send_message);
			/* The caller drops its reference when we return: keep none. */
			b->ops[i].data.send_message.send_message = NULL;
			c->send_busy = 1;
			b->has_msg = 1;
			b->kind = FZ_SEND;
			break;
		case GRPC_OP_SEND_STATUS_FROM_SERVER:
			if (c->client)
				fz_fatal("a status sent by a client");
			if (c->status_started++)
				fz_fatal("a status sent twice");
			b->has_status = 1;
			b->kind = FZ_SEND;
			break;
		case GRPC_OP_SEND_CLOSE_FROM_CLIENT:
			b->kind = FZ_SEND;
			break;
		case GRPC_OP_RECV_INITIAL_METADATA:
			if (!c->client || c->recv_md++)
				fz_fatal("initial metadata received twice, or by a server");
			b->kind = FZ_RECV;
			break;
		case GRPC_OP_RECV_MESSAGE:
			if (c->recv_busy)
				fz_fatal("a second receive while one is in flight");
			*ops[i].data.recv_message.recv_message = NULL;
			c->recv_busy = 1;
			b->has_msg = 1;
			b->kind = FZ_RECV;
			break;
		case GRPC_OP_RECV_CLOSE_ON_SERVER:
			if (c->client || c->close_started++)
				fz_fatal("RECV_CLOSE_ON_SERVER twice, or by a client");
			b->kind = FZ_CLOSE;
			break;
		case GRPC_OP_RECV_STATUS_ON_CLIENT:
			if (!c->client || c->status_started++)
				fz_fatal("RECV_STATUS_ON_CLIENT twice, or by a server");
			b->kind = FZ_STATUS;
			break;
		default:
			fz_fatal("an unknown operation");
		}
	}
	if (c->tail)
		c->tail->next = b;
	else
		c->head = b;
	c->tail = b;
	c->n_batches++;
	return GRPC_CALL_OK;
}

grpc_call_error __wrap_grpc_call_cancel_with_status(grpc_call *call, grpc_status_code status,
						    const char *description, void *reserved)
{
	struct fz_call *c = fz_of(call);

	(void)description;
	(void)reserved;
	if (!c->over && !c->cancelled) {
		c->cancelled = 1;
		c->status = status;
	}
	return GRPC_CALL_OK;
}

grpc_call_error __wrap_grpc_call_cancel(grpc_call *call, void *reserved)
{
	return __wrap_grpc_call_cancel_with_status(call, GRPC_STATUS_CANCELLED, "Cancelled",
						   reserved);
}

void __wrap_grpc_call_unref(grpc_call *call)
{
	struct fz_call *c = fz_of(call);

	if (c->head)
		fz_fatal("a call released with batches in flight");
	c->unrefd = 1;
}

ssize_t __wrap_getrandom(void *buf, size_t len, unsigned int flags)
{
	(void)flags;
	for (size_t i = 0; i < len; i++)
		((uint8_t *)buf)[i] = fz_token[i % sizeof(fz_token)];
	return (ssize_t)len;
}

static void fz_log(void *ud, enum fdx_log_level lvl, const char *func, int line, const char *msg)
{
	(void)ud;
	fprintf(stderr, "fdx[%d] %s:%d: %s\n", (int)lvl, func, line, msg);
}

void fz_log_opts(struct fdx_exchange_opts *o)
{
	if (getenv("FDX_FUZZ_LOG")) {
		o->log_fn = fz_log;
		o->log_level = FDX_LOG_DEBUG;
	}
}

int __wrap_eventfd(unsigned int initval, int flags)
{
	static int shared = -1;

	if (initval || (flags & ~EFD_CLOEXEC) != EFD_NONBLOCK)
		return __real_eventfd(initval, flags);
	if (shared < 0)
		shared = __real_eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return shared < 0 ? -1 : fcntl(shared, F_DUPFD_CLOEXEC, 0);
}

/* ---- completing batches -------------------------------------------------------- */

void fz_call_init(struct fz_call *c, int client, fz_frame_fn on_frame, void *ud)
{
	memset(c, 0, sizeof(*c));
	c->magic = FZ_MAGIC;
	c->client = client;
	c->status = GRPC_STATUS_OK;
	c->on_frame = on_frame;
	c->ud = ud;
}

static struct fz_batch *fz_find(struct fz_call *c, enum fz_kind kind)
{
	for (struct fz_batch *b = c->head; b; b = b->next)
		if (b->kind == kind)
			return b;
	return NULL;
}

/* Take b off c, then hand its completion to the exchange (which may start more). */
static void fz_complete(struct fdx_exchange *ex, struct fz_call *c, struct fz_batch *b, int success)
{
	struct fz_batch **pp = &c->head, *prev = NULL;
	void *tag = b->tag;

	while (*pp != b) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	*pp = b->next;
	if (c->tail == b)
		c->tail = prev;
	c->n_batches--;
	if (b->kind == FZ_SEND && b->has_msg)
		c->send_busy = 0;
	if (b->kind == FZ_RECV && b->has_msg)
		c->recv_busy = 0;
	if (b->has_status)
		c->over = 1; /* server: the call is finished once its status went */
	for (size_t i = 0; i < b->n; i++) {
		grpc_op *op = &b->ops[i];

		if (op->op == GRPC_OP_RECV_CLOSE_ON_SERVER)
			*op->data.recv_close_on_server.cancelled = c->cancelled;
		if (op->op == GRPC_OP_RECV_STATUS_ON_CLIENT) {
			*op->data.recv_status_on_client.status = c->status;
			*op->data.recv_status_on_client.status_details =
				grpc_slice_from_static_string("fuzz: stream ended");
		}
	}
	free(b);
	fdx__fuzz_complete(ex, tag, success);
}

void fz_sends(struct fdx_exchange *ex, struct fz_call *c)
{
	struct fz_batch *b;
	uint32_t rounds = 0;

	while ((b = fz_find(c, FZ_SEND))) {
		if (++rounds > FZ_ROUNDS_MAX)
			fz_fatal("sends that never end");
		fz_complete(ex, c, b, !c->cancelled && !(c->over && !b->has_status));
	}
}

int fz_deliver(struct fdx_exchange *ex, struct fz_call *c, const void *msg, size_t len)
{
	struct fz_batch *b = fz_find(c, FZ_RECV);
	grpc_byte_buffer *bb;
	grpc_slice s;

	if (!b || c->cancelled || c->over)
		return 0;
	s = grpc_slice_from_copied_buffer(msg, len);
	bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	for (size_t i = 0; i < b->n; i++)
		if (b->ops[i].op == GRPC_OP_RECV_MESSAGE)
			*b->ops[i].data.recv_message.recv_message = bb;
	fz_complete(ex, c, b, 1);
	return 1;
}

/* A call that is over or cancelled: whatever is in flight completes. */
static void fz_drain(struct fdx_exchange *ex, struct fz_call *c, int recv_ok)
{
	uint32_t rounds = 0;

	while (c->head) {
		struct fz_batch *b = c->head;
		int ok;

		if (++rounds > FZ_ROUNDS_MAX)
			fz_fatal("a stream that never ends");
		switch (b->kind) {
		case FZ_SEND:
			ok = !c->cancelled && (b->has_status || !c->over);
			break;
		case FZ_RECV:
			ok = recv_ok; /* no message: the stream is over */
			break;
		default:
			ok = 1;
			break;
		}
		fz_complete(ex, c, b, ok);
	}
}

void fz_settle(struct fdx_exchange *ex, struct fz_call *c)
{
	if (c->cancelled)
		fz_drain(ex, c, 0);
}

void fz_end(struct fdx_exchange *ex, struct fz_call *c, enum fz_end how)
{
	struct fz_batch *b;
	uint32_t rounds = 0;

	if (how == FZ_END_CANCEL || c->cancelled) {
		c->cancelled = 1;
		if (c->client && c->status == GRPC_STATUS_OK)
			c->status = GRPC_STATUS_CANCELLED;
		fz_drain(ex, c, 0);
		return;
	}
	if (c->client) {
		/* The peer's status: the call is over for both sides. */
		c->over = 1;
		fz_drain(ex, c, 1);
		return;
	}
	/* The peer half-closes: no more messages; the exchange must end with a status. */
	if ((b = fz_find(c, FZ_RECV)))
		fz_complete(ex, c, b, 1);
	while (!c->over) {
		if (++rounds > FZ_ROUNDS_MAX || !fz_find(c, FZ_SEND))
			fz_fatal("the exchange never ends a stream its peer half-closed");
		fz_sends(ex, c);
		if (c->cancelled) /* the exchange cancelled it meanwhile */
			break;
	}
	fz_drain(ex, c, 1);
}
