/* SPDX-License-Identifier: MIT */
/*
 * Entry points of the fuzz targets (tests/fuzz/). They are in
 * tests/fuzz/seams_dataplane.c and tests/fuzz/seams_exchange.c, built into
 * the fuzz targets alone:
 * the library itself has none of them. They build a data plane and an
 * exchange with no thread, socket, io_uring or gRPC call, so that a fuzz
 * target can hand peer input from memory to the real handlers, playing the
 * kernel (the data plane's receives) and gRPC (the control streams' batches)
 * itself. Everything here runs on the fuzzer's one thread.
 */
#ifndef FDX_TRANSPORT_FUZZ_ENTRY_H
#define FDX_TRANSPORT_FUZZ_ENTRY_H

#include <stdint.h>

#include <fdx/exchange.h>

struct fdx__dp;
struct fdx__conn;
struct fdx__rmap;
struct fdx_gate;
struct grpc_call;

/* ---- tests/fuzz/seams_dataplane.c ---------------------------------------- */

/*
 * A data plane for ex with no ring, no thread and no listening socket. Its
 * receives are not posted to a kernel: fdx__fuzz_conn_recv() completes them.
 */
int fdx__fuzz_dp_create(struct fdx_exchange *ex, struct fdx__dp **out);

/*
 * A consumer's data connection (no socket behind it). link 0: as accepted,
 * its hello to come first. FDX_LINK_SHM or FDX_LINK_TCP: as after a good
 * hello of session sess (shm: map is the peer's region; a reference is
 * taken). Its first receive is posted. NULL if out of memory, or if another
 * is open (one at a time: they share a receive buffer).
 */
struct fdx__conn *fdx__fuzz_conn_open(struct fdx__dp *dp, uint32_t link, uint64_t sess,
				      struct fdx__rmap *map);

/*
 * The receive posted on c completes as the kernel would complete it: up to n
 * bytes of data where it was posted (n 0: the peer closed the socket), and
 * for a recvmsg() the nfd descriptors fds as SCM_RIGHTS (they are c's then:
 * c closes them; a plain recv() drops them, closed here). Then the loop's
 * completion handler runs. Returns the bytes taken (0 for a close), -ENOENT
 * if c has no receive posted (it is dead, or waits for nothing), or -EPROTO
 * if c posted more than one (a bug: the caller should abort).
 */
int fdx__fuzz_conn_recv(struct fdx__conn *c, const void *data, uint32_t n, const int *fds,
			uint32_t nfd);

/*
 * 1 if c is receiving a tcp buffer into a segment of g's pool. Destroying g
 * then leaves that segment lent for good (the receive in flight may still
 * write to it; fdx__dp_remove_gate() lets it go back only with the pool).
 */
int fdx__fuzz_conn_receiving_into(const struct fdx__conn *c, const struct fdx_gate *g);

/*
 * The peer hangs up (a receive still posted completes with 0), then a round
 * of the loop frees c: 0, or -EBUSY if c was not freed (a bug). c is invalid
 * after. One connection at a time: fdx__fuzz_conn_open() refuses a second.
 */
int fdx__fuzz_conn_close(struct fdx__conn *c);

/* The gates removed lately (their late frames are dropped) are exactly ids[0..n). */
void fdx__fuzz_dp_gone_gates(struct fdx__dp *dp, const uint32_t *ids, uint32_t n);

/* What the control plane tells a gate of channel ch and session sess (its hooks). */
enum {
	FDX__FUZZ_OPENED = 1, /* the producer opened it */
	FDX__FUZZ_CLOSED, /* the producer closed it, no CLOSE frame to wait for */
	FDX__FUZZ_FAILED, /* its control stream failed */
};
void fdx__fuzz_gate_hook(struct fdx_gate *g, int what, uint32_t ch, uint64_t sess);

/* ---- tests/fuzz/seams_exchange.c ----------------------------------------- */

/*
 * An exchange that serves nothing (no gRPC server, completion queue or
 * thread), with a data plane from fdx__fuzz_dp_create(). Its streams are
 * made by the two functions below on calls the caller fakes (gRPC's batches
 * on them are the caller's to complete, with fdx__fuzz_complete()).
 */
int fdx__fuzz_exchange_create(const struct fdx_exchange_opts *o, struct fdx_exchange **out);

/* A peer's stream to us came in on call (as the server hands it over). */
void fdx__fuzz_session_start(struct fdx_exchange *ex, struct grpc_call *call);

/* Our stream to the peer at addr, on call: it sends the hello. 0 or -ENOMEM. */
int fdx__fuzz_peer_start(struct fdx_exchange *ex, const char *addr, struct grpc_call *call);

/*
 * fdx_exchange_open_channel() on the stream to addr, cut at its wait: _begin
 * sends the open (0 with *id set, -ENOENT without that stream, -ENOMEM);
 * _end is the opener waking up: -EAGAIN if no answer came and !timed_out
 * (it waits on), else what fdx_exchange_open_channel() returns, with
 * *initial set on success.
 */
int fdx__fuzz_open_begin(struct fdx_exchange *ex, const char *addr, uint32_t gate,
			 uint32_t gate_channel, uint32_t *id);
int fdx__fuzz_open_end(struct fdx_exchange *ex, uint32_t id, int timed_out, uint32_t *initial);

/* gRPC completed the batch started with tag (success as gRPC reports it): the cq thread's work. */
void fdx__fuzz_complete(struct fdx_exchange *ex, void *tag, int success);

/*
 * 0 if no session, peer or producer channel is left, and the counters that
 * name them start again (the next session, peer and channel get the first
 * names again); -EBUSY if something is left.
 */
int fdx__fuzz_exchange_idle(struct fdx_exchange *ex);

#endif /* FDX_TRANSPORT_FUZZ_ENTRY_H */
