/* SPDX-License-Identifier: MIT */
/*
 * Handing a region to a co-located process: one fixed little-endian message
 * announcing its size and geometry, with a read-only descriptor of its memfd
 * attached (SCM_RIGHTS). The receiver checks everything before mapping (see
 * fdx_region_attach()).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <fdx/error.h>

#include "../runtime/log.h"
#include "../runtime/region.h"
#include "region_share.h"
#include "unix_fd.h"

#define FDX_REGION_MSG_MAGIC 0x52584446u /* "FDXR" little-endian */
#define FDX_REGION_MSG_VERSION 1u

/* On the wire, every field little-endian (S1). */
struct fdx__region_msg {
	uint32_t magic;
	uint16_t version;
	uint16_t msg_size;
	uint64_t region_size;
	uint32_t seg_size;
	uint32_t seg_count;
};

_Static_assert(sizeof(struct fdx__region_msg) == FDX__REGION_MSG_LEN,
	       "region message size is wire format");
_Static_assert(offsetof(struct fdx__region_msg, region_size) == 8, "region_size offset");

/*
 * A read-only descriptor of the same memfd, through /proc: the peer cannot
 * map it writable or change its size whatever it does. -1 if /proc is missing.
 */
static int reopen_readonly(int fd)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, O_RDONLY | O_CLOEXEC);
}

void fdx__region_announce(const struct fdx_region *r, void *msg)
{
	struct fdx__region_msg m;

	m.magic = htole32(FDX_REGION_MSG_MAGIC);
	m.version = htole16(FDX_REGION_MSG_VERSION);
	m.msg_size = htole16(sizeof(m));
	m.region_size = htole64(r->size);
	m.seg_size = htole32(r->seg_size);
	m.seg_count = htole32(r->seg_count);
	memcpy(msg, &m, sizeof(m));
}

int fdx__region_send_with(const struct fdx_region *r, int sock, const void *prefix, size_t n)
{
	uint8_t buf[256];
	int ro, err;

	if (n > sizeof(buf) - FDX__REGION_MSG_LEN)
		return -EINVAL;
	if (n)
		memcpy(buf, prefix, n);
	fdx__region_announce(r, buf + n);
	/* Belt and braces: F_SEAL_FUTURE_WRITE already forbids a writable mapping. */
	ro = reopen_readonly(r->fd);
	if (ro < 0)
		FDX_LOG_DEBUG(&r->log,
			      "region: no read-only reopen (%s); F_SEAL_FUTURE_WRITE holds",
			      fdx_strerror(-errno));
	err = fdx__unix_send_fd(sock, ro >= 0 ? ro : r->fd, buf, n + FDX__REGION_MSG_LEN);
	if (ro >= 0)
		close(ro);
	if (err < 0)
		FDX_LOG_ERR(&r->log, "region: send over socket %d failed: %s", sock,
			    fdx_strerror(err));
	return err;
}

FDX_API int fdx_region_send(const struct fdx_region *r, int sock)
{
	if (!r || sock < 0)
		return -EINVAL;
	return fdx__region_send_with(r, sock, NULL, 0);
}

int fdx__region_attach_announced(int fd, const void *msg, const struct fdx__log *lg,
				 struct fdx_region **out)
{
	struct fdx__region_msg m;
	struct fdx_region *r;
	int err;

	memcpy(&m, msg, sizeof(m));
	if (le32toh(m.magic) != FDX_REGION_MSG_MAGIC ||
	    le16toh(m.version) != FDX_REGION_MSG_VERSION || le16toh(m.msg_size) != sizeof(m)) {
		FDX_LOG_ERR(lg, "region: not a region announcement (magic %#x, version %u)",
			    le32toh(m.magic), le16toh(m.version));
		return FDX_EPROTO;
	}
	err = fdx_region_attach(fd, le64toh(m.region_size), lg->fn, lg->ud, &r);
	if (err < 0)
		return err;
	if (r->seg_size != le32toh(m.seg_size) || r->seg_count != le32toh(m.seg_count)) {
		FDX_LOG_ERR(lg, "region: geometry %u x %u differs from the announced %u x %u",
			    r->seg_count, r->seg_size, le32toh(m.seg_count), le32toh(m.seg_size));
		fdx_region_destroy(r);
		return FDX_EBADREGION;
	}
	*out = r;
	return 0;
}

FDX_API int fdx_region_recv(int sock, fdx_log_fn log_fn, void *log_ud, struct fdx_region **out)
{
	struct fdx__region_msg m;
	struct fdx__log lg;
	struct fdx_region *r;
	int fd = -1, err;

	if (out)
		*out = NULL;
	if (sock < 0 || !out)
		return -EINVAL;
	fdx__log_init(&lg, log_fn, log_ud, 0);
	err = fdx__unix_recv_fd(sock, &m, sizeof(m), &fd, &lg);
	if (err < 0) {
		FDX_LOG_ERR(&lg, "region: receive failed: %s", fdx_strerror(err));
		return err;
	}
	err = fdx__region_attach_announced(fd, &m, &lg, &r);
	if (!err)
		*out = r;
	close(fd);
	return err;
}
