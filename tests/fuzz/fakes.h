/* SPDX-License-Identifier: MIT */
/*
 * What the fuzz targets play instead of the world around the exchange:
 * gRPC's side of each control stream, and two system calls.
 *
 * The targets link with -Wl,--wrap for grpc_call_start_batch,
 * grpc_call_cancel, grpc_call_cancel_with_status and grpc_call_unref: the
 * exchange's batches land here instead of in gRPC. Each call is a struct
 * fz_call. The fuzz target then decides what the transport does: deliver a
 * peer's message, let the peer read what we sent, end or cancel the stream.
 * Each completion goes to the exchange through fdx__fuzz_complete(), as the
 * cq thread would take it. getrandom is wrapped so that every session hands
 * out the same token (fz_token), and eventfd so that a gate made per input
 * costs a dup() rather than a new eventfd (one is shared: nobody waits on
 * them here).
 *
 * Checked on the way, as gRPC would refuse it or as the exchange assumes it
 * never happens (abort, so that the fuzzer reports it): a second send or
 * receive of a message while one is in flight, initial metadata or a status
 * sent twice, a frame sent that is not a ControlFrame, a call released with
 * batches in flight or used after its release, a stream that does not end
 * when its peer ends it.
 */
#ifndef FDX_FUZZ_FAKES_H
#define FDX_FUZZ_FAKES_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "exchange.pb-c.h"

struct fdx_exchange;
struct fz_call;

/* Each frame the exchange sends on the call, unpacked (valid during the call only). */
typedef void (*fz_frame_fn)(void *ud, struct fz_call *c, const Fdx__ControlFrame *f);

struct fz_batch;

struct fz_call {
	uint32_t magic;
	int client; /* our stream to a peer; 0: a peer's stream to us (we serve it) */
	int cancelled; /* by either side: every batch fails from now on */
	int over; /* server: our status went; client: the peer's status came */
	int unrefd;
	int sent_md, recv_md, send_busy, recv_busy, close_started, status_started;
	grpc_status_code status; /* client: the status the peer ends the stream with */
	struct fz_batch *head, *tail; /* batches in flight, oldest first */
	uint32_t n_batches;
	fz_frame_fn on_frame;
	void *ud;
	uint64_t frames_sent;
};

/* A fresh call; client says which side we are. */
void fz_call_init(struct fz_call *c, int client, fz_frame_fn on_frame, void *ud);

static inline grpc_call *fz_grpc(struct fz_call *c)
{
	return (grpc_call *)(void *)c;
}

/* The peer reads everything we sent: every send in flight completes (again and again). */
void fz_sends(struct fdx_exchange *ex, struct fz_call *c);

/* The peer's next message: 1 if a receive was in flight and took it, 0 if none was. */
int fz_deliver(struct fdx_exchange *ex, struct fz_call *c, const void *msg, size_t len);

/* If the call was cancelled (by us): every batch in flight completes, failed. */
void fz_settle(struct fdx_exchange *ex, struct fz_call *c);

enum fz_end {
	FZ_END_HALF_CLOSE, /* server: the peer sends no more; we end with a status */
	FZ_END_CANCEL, /* the peer cancels (or dies) */
	FZ_END_STATUS, /* client: the peer ends the stream with c->status */
};

/*
 * The stream ends as how says, and everything in flight completes: after
 * this the call has no batch left (or the run aborts: the exchange did not
 * end it).
 */
void fz_end(struct fdx_exchange *ex, struct fz_call *c, enum fz_end how);

/* The token every session hands out under the fuzzers (getrandom is wrapped). */
extern const uint8_t fz_token[16];

/* With FDX_FUZZ_LOG in the environment, the exchange logs to stderr (to debug a crash). */
struct fdx_exchange_opts;
void fz_log_opts(struct fdx_exchange_opts *o);

#endif /* FDX_FUZZ_FAKES_H */
