/* SPDX-License-Identifier: MIT */
/*
 * The data-socket tokens of the consumer's sessions. Each admits one data
 * socket: a session's own (from its HelloAck), and one per OpenChannelAck (the
 * last FDX__SESS_TOKENS unused ones of a session). The data plane takes a
 * token when a socket presents it (fdx__exchange_token_take()); a token
 * taken, or of a session that is ending, admits nothing.
 *
 * Locking: under ex->lock, taken here.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "exchange_private.h"

/* With ex->lock held: the live session token names (unused, if take), or NULL. */
static struct fdx__session *token_find(struct fdx_exchange *ex, const uint8_t *token, int take)
{
	for (struct fdx__session *s = ex->sessions; s; s = s->next) {
		if (!s->serial || s->finishing)
			continue;
		if (memcmp(s->token, token, sizeof(s->token)) == 0 && !(take && s->token_used)) {
			if (take)
				s->token_used = 1;
			return s;
		}
		for (uint32_t i = 0; i < FDX__SESS_TOKENS; i++)
			if (s->more[i].live &&
			    memcmp(s->more[i].t, token, sizeof(s->more[i].t)) == 0) {
				if (take)
					s->more[i].live = 0;
				return s;
			}
	}
	return NULL;
}

static int token_lookup(struct fdx_exchange *ex, const uint8_t *token, uint64_t *sess, char *peer,
			size_t n, int take)
{
	struct fdx__session *s;
	int err = -ENOENT;

	pthread_mutex_lock(&ex->lock);
	s = token_find(ex, token, take);
	if (s) {
		*sess = s->serial;
		snprintf(peer, n, "%s", s->peer_tm);
		err = 0;
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

int fdx__exchange_token_take(struct fdx_exchange *ex, const uint8_t *token, uint64_t *sess,
			     char *peer, size_t n)
{
	return token_lookup(ex, token, sess, peer, n, 1);
}

int fdx__exchange_token_session(struct fdx_exchange *ex, const uint8_t *token, uint64_t *sess,
				char *peer, size_t n)
{
	return token_lookup(ex, token, sess, peer, n, 0);
}
