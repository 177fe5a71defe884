/* SPDX-License-Identifier: MIT */
/*
 * Test seams of the control plane (transport/fuzz_entry.h, the exchange's
 * half): an exchange that serves nothing, and its sessions, peers, openings
 * and completions driven by the fuzz targets on their one thread. Built only
 * into the fuzz targets (fdx_fuzzlib); the library has
 * none of it. It calls the control plane's internals (exchange_private.h)
 * and takes ex->lock as the cq thread and the owner would.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/exchange_private.h"
#include "transport/fuzz_entry.h"

int fdx__fuzz_exchange_create(const struct fdx_exchange_opts *o, struct fdx_exchange **out)
{
	struct fdx_exchange *ex = NULL;
	int err = fdx__exchange_new(o, &ex);

	if (err < 0)
		return err;
	/* The same on every machine: whether a peer is on this host is the input's to say. */
	snprintf(ex->boot_id, sizeof(ex->boot_id), "fdx-fuzz-boot-id");
	ex->address = strdup("unix:/nonexistent/fdx-fuzz.sock");
	err = ex->address ? fdx__fuzz_dp_create(ex, &ex->dp) : -ENOMEM;
	if (err < 0) {
		fdx_exchange_destroy(ex);
		return err;
	}
	*out = ex;
	return 0;
}

void fdx__fuzz_session_start(struct fdx_exchange *ex, struct grpc_call *call)
{
	pthread_mutex_lock(&ex->lock);
	fdx__session_start(ex, call);
	pthread_mutex_unlock(&ex->lock);
}

int fdx__fuzz_peer_start(struct fdx_exchange *ex, const char *addr, struct grpc_call *call)
{
	struct fdx__peer *p = fdx__peer_new(ex, addr);

	if (!p)
		return -ENOMEM;
	p->call = call;
	pthread_mutex_lock(&ex->lock);
	fdx__peer_begin_locked(ex, p);
	pthread_mutex_unlock(&ex->lock);
	return 0;
}

int fdx__fuzz_open_begin(struct fdx_exchange *ex, const char *addr, uint32_t gate,
			 uint32_t gate_channel, uint32_t *id)
{
	struct fdx__out_chan *c = NULL;
	struct fdx__peer *p;
	int err = -ENOENT;

	pthread_mutex_lock(&ex->lock);
	for (p = ex->peers; p; p = p->next)
		if (p->state != FDX__PEER_FAILED && !p->over && strcmp(p->addr, addr) == 0)
			break;
	if (p)
		err = fdx__out_chan_open_begin_locked(ex, p, "fuzz", gate_channel, gate,
						      gate_channel, &c);
	if (!err)
		*id = c->id;
	pthread_mutex_unlock(&ex->lock);
	return err;
}

int fdx__fuzz_open_end(struct fdx_exchange *ex, uint32_t id, int timed_out, uint32_t *initial)
{
	struct fdx__out_chan *c;
	uint32_t chan;
	int err;

	pthread_mutex_lock(&ex->lock);
	c = fdx__out_chan_get(ex, id);
	if (!c || !c->opening)
		err = -EINVAL;
	else if (c->state == FDX__OUT_OPENING && !timed_out)
		err = -EAGAIN;
	else
		err = fdx__out_chan_open_end_locked(ex, c, timed_out, "fuzz", &chan, initial);
	pthread_mutex_unlock(&ex->lock);
	return err;
}

void fdx__fuzz_complete(struct fdx_exchange *ex, void *tag, int success)
{
	fdx__exchange_cq_complete(ex, tag, success);
}

int fdx__fuzz_exchange_idle(struct fdx_exchange *ex)
{
	int busy;

	pthread_mutex_lock(&ex->lock);
	busy = ex->sessions || ex->peers || ex->n_sessions || ex->n_peers || ex->open_out ||
	       ex->cchans.n;
	if (!busy) {
		ex->next_id = 0; /* the same ids for every input */
		ex->sess_serial = 0;
	}
	pthread_mutex_unlock(&ex->lock);
	return busy ? -EBUSY : 0;
}
