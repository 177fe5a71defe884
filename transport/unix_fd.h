/* SPDX-License-Identifier: MIT */
/* Passing one file descriptor with a small message over a Unix socket (SCM_RIGHTS). */
#ifndef FDX_TRANSPORT_UNIX_FD_H
#define FDX_TRANSPORT_UNIX_FD_H

#include <stddef.h>

#include "../runtime/log.h"

/*
 * Send len bytes with fd attached (SCM_RIGHTS, on the first byte). Retries
 * short writes and EINTR; never raises SIGPIPE.
 * Returns 0, or -EPIPE, -EAGAIN (non-blocking and full before anything
 * went), -ETIMEDOUT (full for a second after part of it went: the stream is
 * then unusable) or another -errno of sendmsg.
 */
int fdx__unix_send_fd(int sock, int fd, const void *buf, size_t len);

/*
 * Receive exactly len bytes and the one descriptor that came with them
 * (close-on-exec). Every descriptor received that is not returned is closed.
 * Returns 0 with *fd set; FDX_EPROTO if no descriptor, more than one, or
 * truncated or foreign control data came, a datagram was longer than len, or
 * a timeout struck in the middle of the message (the cause is logged to lg,
 * which may be NULL); -ECONNRESET if the peer closed first; -EAGAIN on a
 * receive timeout before any byte; another -errno of recvmsg.
 */
int fdx__unix_recv_fd(int sock, void *buf, size_t len, int *fd, const struct fdx__log *lg);

#endif /* FDX_TRANSPORT_UNIX_FD_H */
