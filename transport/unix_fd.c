/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fdx/error.h>

#include "unix_fd.h"

/* Room for a few descriptors, so that a peer sending extras cannot make us leak them. */
#define FDX_MAX_FDS 8

int fdx__unix_send_fd(int sock, int fd, const void *buf, size_t len)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	const char *p = buf;
	struct msghdr msg;
	struct iovec iov;
	ssize_t n;

	memset(&ctl, 0, sizeof(ctl));
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = (void *)p;
	iov.iov_len = len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctl.buf;
	msg.msg_controllen = sizeof(ctl.buf);
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));

	while (len) {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			struct pollfd pfd = {.fd = sock, .events = POLLOUT};

			if (errno == EINTR)
				continue;
			/*
			 * A non-blocking socket full after part of the message (and the
			 * descriptor) went: the rest must follow, or a retry of the whole
			 * would corrupt the stream. Wait for room, at most a second.
			 */
			if ((errno == EAGAIN || errno == EWOULDBLOCK) && p != (const char *)buf) {
				if (poll(&pfd, 1, 1000) > 0)
					continue;
				return -ETIMEDOUT;
			}
			return -errno;
		}
		/* The descriptor went with the first byte; the rest goes plain. */
		msg.msg_control = NULL;
		msg.msg_controllen = 0;
		p += n;
		len -= (size_t)n;
		iov.iov_base = (void *)p;
		iov.iov_len = len;
	}
	return 0;
}

/* Take the descriptors out of one message's control data; close all but the first. */
static int collect_fds(struct msghdr *msg, int *fd, int *nfds)
{
	int bad = (msg->msg_flags & MSG_CTRUNC) != 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			bad = 1;
			continue;
		}
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		for (size_t i = 0; i < n; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*nfds == 0)
				*fd = f;
			else
				close(f);
			(*nfds)++;
		}
	}
	return bad;
}

int fdx__unix_recv_fd(int sock, void *buf, size_t len, int *fd, const struct fdx__log *lg)
{
	union {
		char buf[CMSG_SPACE(FDX_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	char *p = buf;
	int got = -1, nfds = 0, bad = 0, err = 0;
	struct msghdr msg;
	struct iovec iov;
	ssize_t n;

	while (len) {
		memset(&msg, 0, sizeof(msg));
		iov.iov_base = p;
		iov.iov_len = len;
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno == EWOULDBLOCK ? -EAGAIN : -errno;
			if (err == -EAGAIN && p != (char *)buf) {
				/* Part of a message, then silence: the stream is out of step. */
				FDX_LOG_ERR(lg, "socket %d: message cut short", sock);
				err = FDX_EPROTO;
			}
			break;
		}
		bad |= collect_fds(&msg, &got, &nfds);
		if (msg.msg_flags & MSG_TRUNC) {
			/* A datagram longer than the message: not ours. */
			FDX_LOG_ERR(lg, "socket %d: message longer than %zu bytes", sock, len);
			err = FDX_EPROTO;
			break;
		}
		if (n == 0) {
			err = -ECONNRESET;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if (!err && (bad || nfds != 1)) {
		if (bad)
			FDX_LOG_ERR(lg, "socket %d: truncated or foreign control data", sock);
		else
			FDX_LOG_ERR(lg, "socket %d: %d descriptors came, exactly 1 expected", sock,
				    nfds);
		err = FDX_EPROTO;
	}
	if (err) {
		if (nfds)
			close(got);
		return err;
	}
	*fd = got;
	return 0;
}
