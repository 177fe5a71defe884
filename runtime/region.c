/* SPDX-License-Identifier: MIT */
/*
 * The shared region: a sealed memfd, hugetlb-backed when possible. See
 * region.h for the header protocol between creator and attachers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <fdx/error.h>

#include "region.h"
#include "opts.h"

#define FDX_REQUIRED_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
/* What a creator applies and an attacher requires. */
#define FDX_SHARED_SEALS (FDX_REQUIRED_SEALS | F_SEAL_FUTURE_WRITE)

int fdx__region_check_geometry(uint32_t seg_size, uint64_t seg_count)
{
	if (seg_size < FDX_SEG_SIZE_MIN || seg_size > FDX_SEG_SIZE_MAX ||
	    (seg_size & (seg_size - 1)) != 0)
		return -EINVAL;
	if (seg_count == 0 || seg_count > FDX_SEG_COUNT_MAX)
		return -EINVAL;
	return 0;
}

static uint64_t round_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) / align * align;
}

static uint32_t log2_u32(uint32_t v)
{
	return 31u - (uint32_t)__builtin_clz(v);
}

/* The system's default hugepage size, from /proc/meminfo; 0 if unknown. */
static uint64_t default_hugepage_size(void)
{
	char line[128];
	unsigned long kb = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Hugepagesize: %lu kB", &kb) == 1)
			break;
	}
	fclose(f);
	return (uint64_t)kb * 1024;
}

/*
 * Size and allocate a memfd. fallocate() makes the kernel commit the memory
 * now, so a shortage of hugepages (or of memory) is an error here rather than
 * a SIGBUS on first touch.
 */
static int open_memfd(unsigned flags, uint64_t size, int *out_fd)
{
	int fd, err;

	fd = memfd_create("fdx-region", MFD_CLOEXEC | MFD_ALLOW_SEALING | flags);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		goto err_close;
	if (fallocate(fd, 0, 0, (off_t)size) < 0)
		goto err_close;
	*out_fd = fd;
	return 0;

err_close:
	err = -errno;
	close(fd);
	return err;
}

/* Map read-write and fault every page in before anyone uses the region. */
static int map_prefaulted(struct fdx_region *r)
{
	void *p;

	p = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	r->base = p;
	if (!r->hugetlb && madvise(p, r->size, MADV_HUGEPAGE) < 0)
		FDX_LOG_DEBUG(&r->log, "region: MADV_HUGEPAGE not available: %s",
			      fdx_strerror(-errno));
	if (madvise(p, r->size, MADV_POPULATE_WRITE) == 0)
		return 0;
	if (errno != EINVAL) {
		int err = -errno;

		munmap(p, r->size);
		r->base = NULL;
		return err;
	}
	/* Kernels before 5.14: touch each page. The memory is zero already. */
	for (uint64_t off = 0; off < r->size; off += r->page_size)
		r->base[off] = 0;
	return 0;
}

/*
 * F_SEAL_FUTURE_WRITE (5.1+) keeps the creator's existing writable mapping but
 * forbids every new one, and forbids punching holes, whichever descriptor a
 * peer gets: a reader can never be made to fault on a page taken away.
 */
static int add_seals(struct fdx_region *r)
{
	if (fcntl(r->fd, F_ADD_SEALS, FDX_SHARED_SEALS) == 0)
		return 0;
	return -errno;
}

static int create_backing(struct fdx_region *r, uint32_t policy, uint64_t data_bytes)
{
	uint64_t small = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t huge = default_hugepage_size();
	int err = -ENOTSUP;

	if (policy != FDX_HUGEPAGE_NEVER && huge > small) {
		r->size = round_up(data_bytes, huge);
		err = open_memfd(MFD_HUGETLB, r->size, &r->fd);
		if (err == 0) {
			r->page_size = huge;
			r->hugetlb = 1;
			return 0;
		}
		if (policy == FDX_HUGEPAGE_REQUIRE) {
			FDX_LOG_ERR(
				&r->log,
				"region: hugepages required but %llu bytes of %llu KiB pages "
				"could not be had: %s (reserve more in /proc/sys/vm/nr_hugepages)",
				(unsigned long long)r->size, (unsigned long long)(huge >> 10),
				fdx_strerror(err));
			return FDX_ENOHUGEPAGES;
		}
		FDX_LOG_WARN(
			&r->log,
			"region: no hugepages for %llu bytes (%s); falling back to %llu-byte pages",
			(unsigned long long)r->size, fdx_strerror(err), (unsigned long long)small);
	} else if (policy == FDX_HUGEPAGE_REQUIRE) {
		FDX_LOG_ERR(&r->log, "region: hugepages required but the system has none");
		return FDX_ENOHUGEPAGES;
	}
	r->size = round_up(data_bytes, small);
	err = open_memfd(0, r->size, &r->fd);
	if (err == -ENOSPC)
		err = -ENOMEM;
	if (err < 0) {
		FDX_LOG_ERR(&r->log, "region: cannot allocate %llu bytes: %s",
			    (unsigned long long)r->size, fdx_strerror(err));
		return err;
	}
	r->page_size = small;
	r->hugetlb = 0;
	return 0;
}

FDX_API int fdx_region_create(const struct fdx_region_opts *o, struct fdx_region **out)
{
	struct fdx__region_hdr *h;
	struct fdx_region_opts oo;
	struct fdx_region *r;
	uint32_t seg_size;
	int err;

	if (out)
		*out = NULL;
	if (!out || fdx__opts_in(&oo, sizeof(oo), o, FDX_REGION_OPTS_SIZE_V1) < 0)
		return -EINVAL;
	o = &oo;
	if (o->reserved != 0 || o->hugepages > FDX_HUGEPAGE_NEVER)
		return -EINVAL;
	seg_size = o->seg_size ? o->seg_size : FDX_SEG_SIZE_DEFAULT;
	if (fdx__region_check_geometry(seg_size, o->seg_count) < 0)
		return -EINVAL;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->fd = -1;
	fdx__log_init(&r->log, o->log_fn, o->log_ud, o->log_level);
	r->seg_size = seg_size;
	r->seg_shift = log2_u32(seg_size);
	r->seg_count = o->seg_count;
	r->data_offset = seg_size;

	err = create_backing(r, o->hugepages, (uint64_t)(o->seg_count + 1) * seg_size);
	if (err < 0)
		goto err_free;
	err = map_prefaulted(r);
	if (err < 0) {
		FDX_LOG_ERR(&r->log, "region: cannot map %llu bytes: %s",
			    (unsigned long long)r->size, fdx_strerror(err));
		goto err_close;
	}

	h = (struct fdx__region_hdr *)r->base;
	h->magic = FDX_REGION_MAGIC;
	h->hdr_size = sizeof(*h);
	h->region_size = r->size;
	h->data_offset = r->data_offset;
	h->page_size = r->page_size;
	h->seg_size = r->seg_size;
	h->seg_count = r->seg_count;
	h->creator_pid = (uint32_t)getpid();
	h->hugetlb = (uint32_t)r->hugetlb;
	/* R1: publishes the fields above; pairs with A1 in read_header(). */
	fdx_store_release_u32(&h->layout_version, FDX_REGION_LAYOUT_VERSION);

	err = add_seals(r);
	if (err < 0) {
		FDX_LOG_ERR(&r->log,
			    "region: cannot seal memfd (F_SEAL_FUTURE_WRITE needs Linux 5.1): %s",
			    fdx_strerror(err));
		goto err_unmap;
	}
	FDX_LOG_INFO(&r->log, "region: %llu bytes, %u segments of %u bytes, %llu-byte %s pages",
		     (unsigned long long)r->size, r->seg_count, r->seg_size,
		     (unsigned long long)r->page_size, r->hugetlb ? "hugetlb" : "small");
	*out = r;
	return 0;

err_unmap:
	munmap(r->base, r->size);
err_close:
	close(r->fd);
err_free:
	free(r);
	return err;
}

/* Is fd a memfd? By its /proc name where /proc is mounted, else by its seals. */
static int check_memfd(int fd, const struct stat *st, int *seals)
{
	char path[64], name[64];
	ssize_t n;

	if (!S_ISREG(st->st_mode))
		return FDX_ENOTMEMFD;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, name, sizeof(name) - 1);
	if (n > 0) {
		name[n] = '\0';
		if (strncmp(name, "/memfd:", 7) != 0)
			return FDX_ENOTMEMFD;
	}
	*seals = fcntl(fd, F_GET_SEALS);
	if (*seals < 0)
		return errno == EINVAL ? FDX_ENOTMEMFD : -errno;
	return 0;
}

/* Validate a copy of the header: the peer may still be writing the original. */
static int read_header(struct fdx_region *r)
{
	struct fdx__region_hdr *sh = (struct fdx__region_hdr *)r->base;
	uint32_t version;
	uint64_t end;

	/* A1: pairs with R1 in fdx_region_create(). */
	version = fdx_load_acquire_u32(&sh->layout_version);
	if (sh->magic != FDX_REGION_MAGIC || version != FDX_REGION_LAYOUT_VERSION) {
		FDX_LOG_ERR(&r->log, "region: bad header (magic %#llx, layout version %u, want %u)",
			    (unsigned long long)sh->magic, version, FDX_REGION_LAYOUT_VERSION);
		return FDX_EBADREGION;
	}
	struct fdx__region_hdr h;

	memcpy(&h, sh, sizeof(h));
	if (h.hdr_size != sizeof(h) || h.region_size != r->size ||
	    fdx__region_check_geometry(h.seg_size, h.seg_count) < 0 ||
	    h.data_offset != h.seg_size) {
		FDX_LOG_ERR(&r->log, "region: header geometry is invalid (size %llu, seg %u x %u)",
			    (unsigned long long)h.region_size, h.seg_count, h.seg_size);
		return FDX_EBADREGION;
	}
	end = h.data_offset + (uint64_t)h.seg_count * h.seg_size;
	if (end > r->size) {
		FDX_LOG_ERR(&r->log, "region: %u segments of %u bytes do not fit in %llu bytes",
			    h.seg_count, h.seg_size, (unsigned long long)r->size);
		return FDX_EBADREGION;
	}
	r->seg_size = h.seg_size;
	r->seg_shift = log2_u32(h.seg_size);
	r->seg_count = h.seg_count;
	r->data_offset = h.data_offset;
	return 0;
}

FDX_API int fdx_region_attach(int fd, uint64_t expected_size, fdx_log_fn log_fn, void *log_ud,
			      struct fdx_region **out)
{
	struct fdx_region *r;
	struct statfs sfs;
	struct stat st;
	int err, seals = 0;
	void *p;

	if (out)
		*out = NULL;
	if (fd < 0 || expected_size == 0 || !out)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->fd = -1;
	r->readonly = 1;
	fdx__log_init(&r->log, log_fn, log_ud, 0);

	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto err_free;
	}
	err = check_memfd(fd, &st, &seals);
	if (err < 0) {
		FDX_LOG_ERR(&r->log, "region: fd %d refused: %s", fd, fdx_strerror(err));
		goto err_free;
	}
	if ((seals & FDX_REQUIRED_SEALS) != FDX_REQUIRED_SEALS ||
	    !(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))) { /* either stops hole punching */
		FDX_LOG_ERR(&r->log, "region: memfd refused: seals %#x lack%s%s%s%s",
			    (unsigned)seals, (seals & F_SEAL_SHRINK) ? "" : " F_SEAL_SHRINK",
			    (seals & F_SEAL_GROW) ? "" : " F_SEAL_GROW",
			    (seals & F_SEAL_SEAL) ? "" : " F_SEAL_SEAL",
			    (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
				    ? ""
				    : " F_SEAL_FUTURE_WRITE");
		err = FDX_EUNSEALED;
		goto err_free;
	}
	/*
	 * Only now is the size fixed: a size read before the seals were checked
	 * could be stale (the peer may shrink, then seal), and mapping a stale
	 * size would fault with SIGBUS on the first read past the real end.
	 */
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto err_free;
	}
	if ((uint64_t)st.st_size != expected_size) {
		FDX_LOG_ERR(&r->log, "region: memfd refused: %llu bytes, %llu announced",
			    (unsigned long long)st.st_size, (unsigned long long)expected_size);
		err = FDX_ESIZE;
		goto err_free;
	}
	r->size = expected_size;
	r->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
	if (fstatfs(fd, &sfs) == 0 && sfs.f_type == HUGETLBFS_MAGIC) {
		r->hugetlb = 1;
		r->page_size = (uint64_t)st.st_blksize;
	}
	if (r->size % r->page_size != 0) {
		FDX_LOG_ERR(&r->log, "region: size %llu is not a multiple of the page size",
			    (unsigned long long)r->size);
		err = FDX_ESIZE;
		goto err_free;
	}
	r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (r->fd < 0) {
		err = -errno;
		goto err_free;
	}
	p = mmap(NULL, r->size, PROT_READ, MAP_SHARED, r->fd, 0);
	if (p == MAP_FAILED) {
		err = -errno;
		FDX_LOG_ERR(&r->log, "region: cannot map %llu bytes read-only: %s",
			    (unsigned long long)r->size, fdx_strerror(-errno));
		goto err_close;
	}
	r->base = p;
	err = read_header(r);
	if (err < 0)
		goto err_unmap;
	*out = r;
	return 0;

err_unmap:
	munmap(r->base, r->size);
err_close:
	close(r->fd);
err_free:
	free(r);
	return err;
}

FDX_API void fdx_region_destroy(struct fdx_region *r)
{
	if (!r)
		return;
	munmap(r->base, r->size);
	close(r->fd);
	free(r);
}

FDX_API int fdx_region_fd(const struct fdx_region *r)
{
	return r ? r->fd : -1;
}

FDX_API uint64_t fdx_region_size(const struct fdx_region *r)
{
	return r ? r->size : 0;
}

FDX_API uint64_t fdx_region_page_size(const struct fdx_region *r)
{
	return r ? r->page_size : 0;
}

FDX_API int fdx_region_is_hugetlb(const struct fdx_region *r)
{
	return r ? r->hugetlb : 0;
}

FDX_API int fdx_region_is_readonly(const struct fdx_region *r)
{
	return r ? r->readonly : 0;
}

FDX_API uint32_t fdx_region_seg_size(const struct fdx_region *r)
{
	return r ? r->seg_size : 0;
}

FDX_API uint32_t fdx_region_seg_count(const struct fdx_region *r)
{
	return r ? r->seg_count : 0;
}

FDX_API void *fdx_region_ptr(const struct fdx_region *r, uint64_t offset, uint64_t len)
{
	uint64_t slot;

	if (!r || len == 0 || len > r->seg_size)
		return NULL;
	slot = offset >> r->seg_shift;
	/* Slot 0 is the header; slots 1..seg_count are the segments. */
	if (slot > r->seg_count || ((offset + len - 1) >> r->seg_shift) != slot)
		return NULL;
	return r->base + offset;
}
