/* SPDX-License-Identifier: MIT */
/*
 * The control frame codec and each call's send queue (control_codec.h):
 * ControlFrames to and from gRPC byte buffers, batches counted in their
 * object's pending operations, frames sent one at a time on a call.
 *
 * Locking: none of its own. A queue and its pending count belong to one
 * session or peer, and every caller holds the exchange's lock (ex->lock).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>

#include "control_codec.h"

grpc_byte_buffer *fdx__ctl_pack(const Fdx__ControlFrame *f)
{
	size_t n = fdx__control_frame__get_packed_size(f);
	grpc_slice s = grpc_slice_malloc(n);
	grpc_byte_buffer *bb;

	fdx__control_frame__pack(f, GRPC_SLICE_START_PTR(s));
	bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

/* Unpack a received message; NULL if it is not a ControlFrame. */
Fdx__ControlFrame *fdx__ctl_unpack(grpc_byte_buffer *bb)
{
	grpc_byte_buffer_reader r;
	Fdx__ControlFrame *f;
	grpc_slice s;

	if (!grpc_byte_buffer_reader_init(&r, bb))
		return NULL;
	s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	f = fdx__control_frame__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
	grpc_slice_unref(s);
	return f;
}

/*
 * Start a batch, counting it in *pending first: the completion may be
 * processed by the cq thread before grpc_call_start_batch() even returns.
 * Everything written before the call happens-before its completion event.
 */
int fdx__ctl_start_batch(grpc_call *call, const grpc_op *ops, size_t n, struct fdx__ctl_tag *t,
			 int *pending)
{
	(*pending)++;
	if (grpc_call_start_batch(call, ops, n, t, NULL) == GRPC_CALL_OK)
		return 1;
	(*pending)--;
	return 0;
}

void fdx__ctl_sendq_push(struct fdx__ctl_sendq *q, grpc_byte_buffer *bb)
{
	struct fdx__ctl_outframe *o = calloc(1, sizeof(*o));

	if (!o) {
		/* Out of memory for a control frame: drop it; the stream's status tells. */
		grpc_byte_buffer_destroy(bb);
		return;
	}
	o->bb = bb;
	q->len++;
	if (q->tail)
		q->tail->next = o;
	else
		q->head = o;
	q->tail = o;
}

static grpc_byte_buffer *sendq_pop(struct fdx__ctl_sendq *q)
{
	struct fdx__ctl_outframe *o = q->head;
	grpc_byte_buffer *bb;

	if (!o)
		return NULL;
	q->head = o->next;
	q->len--;
	if (!q->head)
		q->tail = NULL;
	bb = o->bb;
	free(o);
	return bb;
}

void fdx__ctl_sendq_clear(struct fdx__ctl_sendq *q)
{
	grpc_byte_buffer *bb;

	while ((bb = sendq_pop(q)))
		grpc_byte_buffer_destroy(bb);
}

/* Start a SEND_MESSAGE of the next queued frame if none is in flight; 1 if started. */
int fdx__ctl_send_next(grpc_call *call, struct fdx__ctl_sendq *q, struct fdx__ctl_tag *t,
		       int *pending)
{
	grpc_byte_buffer *bb;
	grpc_op op;

	if (q->busy || !(bb = sendq_pop(q)))
		return 0;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = bb;
	q->busy = 1;
	if (!fdx__ctl_start_batch(call, &op, 1, t, pending))
		q->busy = 0;
	/* gRPC holds its own reference to the message until the batch completes. */
	grpc_byte_buffer_destroy(bb);
	return q->busy;
}
