/* SPDX-License-Identifier: MIT */
/*
 * The control plane's frames on a gRPC call: packing and unpacking a
 * ControlFrame, the completion tags, and each call's queue of packed frames.
 *
 * gRPC C core allows one send and one receive in flight per call: each call
 * object keeps its own queue of packed frames, sent one after the other.
 * Nothing here locks: a queue belongs to its session or peer, under the
 * exchange's lock (ex->lock) like the rest of it.
 */
#ifndef FDX_TRANSPORT_CONTROL_CODEC_H
#define FDX_TRANSPORT_CONTROL_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "exchange.pb-c.h"

/* The one method of the DataExchange service: a bidirectional stream of ControlFrames. */
#define FDX__CTL_METHOD "/fdx.DataExchange/ExchangeData"

/* What a completion is for: the tag of each batch names its kind and its object. */
enum fdx__ctl_tag_kind {
	FDX__CTL_TAG_REQUEST_CALL,
	FDX__CTL_TAG_SERVER_SHUTDOWN,
	FDX__CTL_TAG_SESSION_RECV,
	FDX__CTL_TAG_SESSION_SEND,
	FDX__CTL_TAG_SESSION_CLOSE,
	FDX__CTL_TAG_SESSION_STATUS,
	FDX__CTL_TAG_PEER_RECV,
	FDX__CTL_TAG_PEER_SEND,
	FDX__CTL_TAG_PEER_STATUS,
};

struct fdx__ctl_tag {
	enum fdx__ctl_tag_kind kind;
	void *obj;
};

/* A packed frame waiting for its turn to be sent on a call. */
struct fdx__ctl_outframe {
	grpc_byte_buffer *bb;
	struct fdx__ctl_outframe *next;
};

struct fdx__ctl_sendq {
	struct fdx__ctl_outframe *head, *tail;
	uint32_t len; /* frames queued, not counting the one in flight */
	int busy; /* a SEND_MESSAGE (or the initial metadata) is in flight */
};

/*
 * Most frames queued on one stream. Our own frames are coalesced or bounded
 * by what the owner asks; only a peer that does not read its stream while it
 * keeps asking for answers can reach this, and it is cut off.
 */
#define FDX__CTL_SENDQ_MAX 1024u

/* f packed into a new byte buffer (the caller's). */
grpc_byte_buffer *fdx__ctl_pack(const Fdx__ControlFrame *f);

/* Unpack a received message; NULL if it is not a ControlFrame. */
Fdx__ControlFrame *fdx__ctl_unpack(grpc_byte_buffer *bb);

/*
 * Start a batch, counting it in *pending first: 1 if started, 0 if not (and
 * *pending as it was).
 */
int fdx__ctl_start_batch(grpc_call *call, const grpc_op *ops, size_t n, struct fdx__ctl_tag *t,
			 int *pending);

/* Queue bb (the queue's then; dropped if out of memory). */
void fdx__ctl_sendq_push(struct fdx__ctl_sendq *q, grpc_byte_buffer *bb);

/* Drop every frame queued. */
void fdx__ctl_sendq_clear(struct fdx__ctl_sendq *q);

/* Start a SEND_MESSAGE of the next queued frame if none is in flight; 1 if started. */
int fdx__ctl_send_next(grpc_call *call, struct fdx__ctl_sendq *q, struct fdx__ctl_tag *t,
		       int *pending);

#endif /* FDX_TRANSPORT_CONTROL_CODEC_H */
