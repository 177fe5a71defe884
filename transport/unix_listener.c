/* SPDX-License-Identifier: MIT */
/*
 * The exchange's Unix control socket: its default directory (ours alone),
 * sockets that dead processes left there swept once per process, the
 * listening socket (a stale file replaced, a live one never), and our own
 * accept thread, which checks each connection's SO_PEERCRED uid against the
 * allowed uids before it hands the socket to gRPC.
 *
 * Locking: the accept thread takes ex->lock only to count a refused peer.
 * The allowed uids never change after creation: fdx__exchange_uid_allowed()
 * reads them on any thread (the data plane's too) without a lock. The rest
 * runs in fdx_exchange_create(), before the threads start.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>

#include <fdx/error.h>

#include "../runtime/log.h"
#include "../runtime/clock.h"
#include "exchange_private.h"

int fdx__exchange_uid_allowed(const struct fdx_exchange *ex, uint32_t uid)
{
	for (uint32_t i = 0; i < ex->n_allow_uids; i++)
		if (ex->allow_uids[i] == uid)
			return 1;
	return 0;
}

/*
 * Connections accepted and not yet handed to gRPC: each waits for its first
 * bytes (the HTTP/2 preface) at most hello_ms; at most PENDING_MAX wait at
 * once (more are closed at once). A connection that never speaks holds a
 * descriptor here for a bounded time, and nothing of gRPC's.
 */
#define PENDING_MAX 64

struct pending {
	int fd;
	uint64_t since;
};

/* A connection we accepted: its uid checked, then it waits to speak. */
static void accept_one(struct fdx_exchange *ex, int fd, struct pending *pend, int *np)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    !fdx__exchange_uid_allowed(ex, (uint32_t)cred.uid)) {
		FDX_LOG_WARN(&ex->log,
			     "exchange %s: refused a Unix peer (pid %d, uid %d): uid not allowed",
			     ex->tm_id, (int)cred.pid, (int)cred.uid);
		pthread_mutex_lock(&ex->lock);
		ex->st.peers_refused++;
		pthread_mutex_unlock(&ex->lock);
		close(fd);
		return;
	}
	if (*np == PENDING_MAX) {
		FDX_LOG_WARN(&ex->log,
			     "exchange %s: %d control connections have not spoken yet; refused "
			     "another (pid %d)",
			     ex->tm_id, PENDING_MAX, (int)cred.pid);
		close(fd);
		return;
	}
	pend[*np].fd = fd;
	pend[(*np)++].since = fdx__now_ns();
}

void *fdx__unix_accept_main(void *arg)
{
	struct fdx_exchange *ex = arg;
	struct pending pend[PENDING_MAX];
	struct pollfd pfd[PENDING_MAX + 1];
	uint64_t due = (uint64_t)ex->hello_ms * 1000000u;
	int np = 0, stop = 0;

	while (!stop) {
		uint64_t now = fdx__now_ns(), wait_ns = UINT64_MAX;
		int n;

		pfd[0] = (struct pollfd){.fd = ex->listen_fd, .events = POLLIN};
		for (int i = 0; i < np; i++) {
			uint64_t left = pend[i].since + due > now ? pend[i].since + due - now : 0;

			pfd[i + 1] = (struct pollfd){.fd = pend[i].fd, .events = POLLIN};
			if (left < wait_ns)
				wait_ns = left;
		}
		n = poll(pfd, (nfds_t)np + 1,
			 wait_ns == UINT64_MAX ? -1 : (int)(wait_ns / 1000000u) + 1);
		if (n < 0 && errno != EINTR)
			break;
		now = fdx__now_ns();
		/* Those that spoke go to gRPC; those silent too long are closed. */
		for (int i = np - 1; i >= 0; i--) {
			short re = pfd[i + 1].revents;

			if (re) {
				grpc_server_credentials *creds =
					grpc_insecure_server_credentials_create();

				grpc_server_add_channel_from_fd(ex->server, pend[i].fd,
								creds); /* takes fd */
				grpc_server_credentials_release(creds);
			} else if (now - pend[i].since >= due) {
				FDX_LOG_WARN(
					&ex->log,
					"exchange %s: a control connection sent nothing within "
					"%u ms; closed",
					ex->tm_id, ex->hello_ms);
				close(pend[i].fd);
			} else {
				continue;
			}
			pend[i] = pend[--np];
		}
		if (n <= 0 || !pfd[0].revents)
			continue;
		if (pfd[0].revents & (POLLHUP | POLLERR | POLLNVAL))
			break; /* shut down by fdx_exchange_destroy() */
		for (;;) {
			int fd = accept4(ex->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

			if (fd >= 0) {
				accept_one(ex, fd, pend, &np);
				continue;
			}
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Out of descriptors: back off rather than spin. */
				FDX_LOG_ERR(&ex->log, "exchange %s: accept: %s", ex->tm_id,
					    fdx_strerror(-errno));
				usleep(10000);
				break;
			}
			stop = 1; /* shut down by fdx_exchange_destroy() */
			break;
		}
	}
	for (int i = 0; i < np; i++)
		close(pend[i].fd);
	return NULL;
}

/*
 * Socket files this process bound, removed at exit() if their exchange was
 * not destroyed first (a process that is killed leaves them: the next
 * exchange's sweep removes those). Each remembers its process: a forked
 * child that exits removes none of its parent's.
 */
struct bound_path {
	struct bound_path *next;
	pid_t pid;
	char path[];
};

static pthread_mutex_t bound_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bound_path *bound;

static void unlink_bound_at_exit(void)
{
	pthread_mutex_lock(&bound_lock);
	for (struct bound_path *b = bound; b; b = b->next)
		if (b->pid == getpid())
			unlink(b->path);
	pthread_mutex_unlock(&bound_lock);
}

static void register_at_exit(void)
{
	atexit(unlink_bound_at_exit);
}

void fdx__unix_path_bound(const char *path)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	size_t n = strlen(path) + 1;
	struct bound_path *b = malloc(sizeof(*b) + n);

	if (!b)
		return; /* only the cleanup at exit is lost: the sweep still finds it */
	pthread_once(&once, register_at_exit);
	b->pid = getpid();
	memcpy(b->path, path, n);
	pthread_mutex_lock(&bound_lock);
	b->next = bound;
	bound = b;
	pthread_mutex_unlock(&bound_lock);
}

void fdx__unix_path_unlink(const char *path)
{
	pthread_mutex_lock(&bound_lock);
	for (struct bound_path **bp = &bound; *bp; bp = &(*bp)->next)
		if (strcmp((*bp)->path, path) == 0) {
			struct bound_path *b = *bp;

			*bp = b->next;
			free(b);
			break;
		}
	pthread_mutex_unlock(&bound_lock);
	unlink(path);
}

/* The default socket directory: ours alone, created if missing. */
int fdx__unix_sock_dir(struct fdx_exchange *ex, char *dir, size_t n)
{
	const char *run = getenv("XDG_RUNTIME_DIR");
	struct stat st;

	if (run && run[0] == '/')
		snprintf(dir, n, "%s/fdx", run);
	else
		snprintf(dir, n, "/tmp/fdx-%u", (unsigned)geteuid());
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		FDX_LOG_ERR(&ex->log,
			    "exchange: socket directory %s is not a directory of ours that only we "
			    "can enter (mode %o, owner %u)",
			    dir, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
		return -EPERM;
	}
	return 0;
}

int fdx__unix_listen(struct fdx_exchange *ex, const char *path)
{
	struct sockaddr_un sa;
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	/* Non-blocking: the accept thread takes every connection waiting, then polls. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int probe;

		if (errno != EADDRINUSE)
			goto err_close;
		/* A stale file from a dead exchange may be replaced; a live one may not. */
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			close(fd);
			return -EADDRINUSE;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto err_close;
	}
	if (listen(fd, 64) < 0)
		goto err_close;
	ex->listen_fd = fd;
	fdx__unix_path_bound(path);
	return 0;

err_close:
	err = -errno;
	close(fd);
	return err;
}

/*
 * Sockets that processes killed before their exchange's destroy left in the
 * default directory (tm-PID-N...): removed once per process, so that the
 * directory stays bounded and fdx-stat finds only live TaskManagers. A file
 * whose PID lives (even another program reusing it) is left alone.
 */
void fdx__unix_sweep_stale(struct fdx_exchange *ex, const char *dir)
{
	static _Atomic int swept;
	struct dirent *e;
	int n = 0;
	DIR *d;

	if (atomic_exchange(&swept, 1) || !(d = opendir(dir)))
		return;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (strncmp(e->d_name, "tm-", 3) != 0)
			continue;
		errno = 0;
		pid = strtol(e->d_name + 3, &end, 10);
		if (errno || end == e->d_name + 3 || *end != '-' || pid <= 0 || pid == getpid())
			continue;
		if (kill((pid_t)pid, 0) < 0 && errno == ESRCH &&
		    unlinkat(dirfd(d), e->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	if (n)
		FDX_LOG_INFO(&ex->log, "exchange: removed %d sockets of processes gone from %s", n,
			     dir);
}
