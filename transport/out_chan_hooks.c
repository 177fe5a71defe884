/* SPDX-License-Identifier: MIT */
/*
 * The data plane's calls on our channels to remote gates (producer side, see
 * producer_peer.c): a partition's subpartition hooked to its channel (its
 * credit so far and its stamp move to the partition's ledger), unhooked,
 * failed with its data socket; the stamp a hand-made producer's buffers go
 * with; what the data plane needs to dial a channel's data socket.
 *
 * Locking: each call takes ex->lock; hooks run with it held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <fdx/partition.h>

#include "exchange_private.h"

int fdx__exchange_hook_channel(struct fdx_exchange *ex, uint32_t channel,
			       const struct fdx__chan_hooks *h, void *ud, uint64_t *available)
{
	struct fdx__out_chan *c;
	int err = 0;

	pthread_mutex_lock(&ex->lock);
	c = fdx__out_chan_open_locked(ex, channel);
	if (!c) {
		err = -ENOENT;
	} else {
		struct fdx__credit_stamp st;
		uint32_t bad = 0;

		c->hooks = h;
		c->hook_ud = ud;
		/* The credit so far moves to the partition's ledger, with its stamp: none is lost. */
		*available = fdx__ledger_available(&c->own);
		st = fdx__ledger_stamp(&c->own);
		h->credit(ud, (uint32_t)*available, NULL, 0, 0, &st, &bad);
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

int fdx__exchange_chan_stamp(struct fdx_exchange *ex, uint32_t channel,
			     struct fdx__credit_stamp *st)
{
	struct fdx__out_chan *c;

	pthread_mutex_lock(&ex->lock);
	c = fdx__out_chan_open_locked(ex, channel);
	if (c)
		*st = fdx__ledger_stamp(&c->own);
	pthread_mutex_unlock(&ex->lock);
	return c ? 0 : -ENOENT;
}

void fdx__exchange_unhook_channel(struct fdx_exchange *ex, uint32_t channel)
{
	struct fdx__out_chan *c;

	pthread_mutex_lock(&ex->lock);
	c = fdx__out_chan_get(ex, channel);
	if (c) {
		if (c->hooks)
			c->unhooked = 1; /* its credit goes nowhere from now on */
		c->hooks = NULL;
		c->hook_ud = NULL;
	}
	pthread_mutex_unlock(&ex->lock);
}

void fdx__exchange_fail_channel(struct fdx_exchange *ex, uint32_t channel)
{
	struct fdx__out_chan *c;

	pthread_mutex_lock(&ex->lock);
	c = fdx__out_chan_open_locked(ex, channel);
	if (c) {
		fdx__out_chan_return_inflight_locked(c);
		fdx__peer_send_close_locked(c->p, c, 0);
		c->state = FDX__OUT_CLOSED;
		ex->open_out--;
	}
	pthread_mutex_unlock(&ex->lock);
}

int fdx__exchange_peer_data(struct fdx_exchange *ex, const char *addr, uint32_t chan,
			    struct fdx__peer_data *pd)
{
	int err = -ENOENT;

	pthread_mutex_lock(&ex->lock);
	for (struct fdx__peer *p = ex->peers; p; p = p->next)
		if (p->state == FDX__PEER_UP && strcmp(p->addr, addr) == 0) {
			struct fdx__out_chan *c =
				chan == UINT32_MAX ? NULL : fdx__peer_chan(p, chan);

			pd->link = p->link == FDX__LINK__LINK_SHM ? FDX_LINK_SHM : FDX_LINK_TCP;
			memcpy(pd->token, p->token, sizeof(pd->token));
			/* The channel's own socket token, once: it admits one data socket. */
			pd->has_sock_token = c && c->has_sock_token;
			if (pd->has_sock_token) {
				memcpy(pd->sock_token, c->sock_token, sizeof(pd->sock_token));
				c->has_sock_token = 0;
			}
			snprintf(pd->unix_ep, sizeof(pd->unix_ep), "%s", p->unix_ep);
			snprintf(pd->tcp_ep, sizeof(pd->tcp_ep), "%s", p->tcp_ep);
			snprintf(pd->remote_tm, sizeof(pd->remote_tm), "%s", p->remote_tm);
			err = 0;
			break;
		}
	pthread_mutex_unlock(&ex->lock);
	return err;
}
