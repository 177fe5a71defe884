/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/region.h"

#define SEG (32u * 1024)
#define COUNT 64u

static struct fdx_region_opts opts(uint32_t policy, struct test_log *lg)
{
	struct fdx_region_opts o;

	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.seg_size = SEG;
	o.seg_count = COUNT;
	o.hugepages = policy;
	o.log_fn = lg ? test_log_fn : NULL;
	o.log_ud = lg;
	o.log_level = FDX_LOG_DEBUG;
	return o;
}

/* Hugepages needed for the test region: header slot + segments, rounded up. */
static long hugepages_needed(void)
{
	return (long)(((COUNT + 1) * (uint64_t)SEG + (2u << 20) - 1) / (2u << 20));
}

static void test_region_create_rejects_bad_options(void **state)
{
	static const uint32_t bad_sizes[] = {0x1000 - 1, 2048, 3000, 6000, 2u << 20, 48 * 1024};
	struct fdx_region *r = (void *)1;
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_NEVER, NULL);

	(void)state;
	assert_int_equal(fdx_region_create(NULL, &r), -EINVAL);
	assert_int_equal(fdx_region_create(&o, NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		o = opts(FDX_HUGEPAGE_NEVER, NULL);
		o.seg_size = bad_sizes[i];
		r = (void *)1;
		assert_int_equal(fdx_region_create(&o, &r), -EINVAL);
		assert_null(r);
	}
	o = opts(FDX_HUGEPAGE_NEVER, NULL);
	o.seg_count = 0;
	assert_int_equal(fdx_region_create(&o, &r), -EINVAL);
	o.seg_count = FDX_SEG_COUNT_MAX + 1;
	assert_int_equal(fdx_region_create(&o, &r), -EINVAL);
	o = opts(3, NULL);
	assert_int_equal(fdx_region_create(&o, &r), -EINVAL);
	o = opts(FDX_HUGEPAGE_NEVER, NULL);
	o.size = 8;
	assert_int_equal(fdx_region_create(&o, &r), -EINVAL);
	o = opts(FDX_HUGEPAGE_NEVER, NULL);
	o.reserved = 1;
	assert_int_equal(fdx_region_create(&o, &r), -EINVAL);
	assert_null(r);
}

static void test_region_never_uses_small_pages(void **state)
{
	struct test_log lg = {0};
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_NEVER, &lg);
	struct fdx_region *r;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

	(void)state;
	assert_int_equal(fdx_region_create(&o, &r), 0);
	assert_int_equal(fdx_region_is_hugetlb(r), 0);
	assert_int_equal(fdx_region_page_size(r), page);
	assert_int_equal(fdx_region_size(r) % page, 0);
	assert_true(fdx_region_size(r) >= (COUNT + 1) * (uint64_t)SEG);
	assert_int_equal(fdx_region_seg_size(r), SEG);
	assert_int_equal(fdx_region_seg_count(r), COUNT);
	assert_int_equal(fdx_region_is_readonly(r), 0);
	/* The page size obtained is logged. */
	assert_non_null(strstr(lg.all, "small pages"));
	fdx_region_destroy(r);
}

static void test_region_prefer_takes_hugepages_or_says_it_fell_back(void **state)
{
	struct test_log lg = {0};
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_PREFER, &lg);
	long before = test_hugepages_free();
	struct fdx_region *r;

	(void)state;
	assert_int_equal(fdx_region_create(&o, &r), 0);
	if (before >= hugepages_needed()) {
		assert_int_equal(fdx_region_is_hugetlb(r), 1);
		assert_int_equal(fdx_region_page_size(r), 2u << 20);
		assert_int_equal(fdx_region_size(r) % (2u << 20), 0);
		/* Pre-faulted: the pages are taken now, not at first touch. */
		assert_int_equal(test_hugepages_free(), before - (long)(fdx_region_size(r) >> 21));
		assert_non_null(strstr(lg.all, "hugetlb pages"));
	} else {
		assert_false(test_expect_hugepages());
		assert_int_equal(fdx_region_is_hugetlb(r), 0);
		assert_true(lg.warnings >= 1);
		assert_non_null(strstr(lg.all, "falling back"));
	}
	fdx_region_destroy(r);
	assert_int_equal(test_hugepages_free(), before);
}

static void test_region_require_fails_clearly_without_hugepages(void **state)
{
	struct test_log lg = {0};
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_REQUIRE, &lg);
	struct fdx_region *r = (void *)1;
	int err;

	(void)state;
	err = fdx_region_create(&o, &r);
	if (test_hugepages_free() < hugepages_needed() && err == FDX_ENOHUGEPAGES) {
		assert_false(test_expect_hugepages());
		assert_null(r);
		assert_int_equal(lg.errors, 1);
		assert_non_null(strstr(lg.last, "hugepages required"));
		return;
	}
	assert_int_equal(err, 0);
	assert_int_equal(fdx_region_is_hugetlb(r), 1);
	assert_int_equal(fdx_region_page_size(r), 2u << 20);
	fdx_region_destroy(r);
}

/* Whatever is reserved, require fails cleanly for one hugepage more than is free. */
static void test_region_require_fails_when_hugepages_run_short(void **state)
{
	struct test_log lg = {0};
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_REQUIRE, &lg);
	struct fdx_region *r = (void *)1;
	long before = test_hugepages_free();

	(void)state;
	/* (free + 1) hugepages of segments, plus the header slot. */
	o.seg_count = (uint32_t)(((uint64_t)before + 1) * (2u << 20) / SEG);
	assert_int_equal(fdx_region_create(&o, &r), FDX_ENOHUGEPAGES);
	assert_null(r);
	assert_int_equal(lg.errors, 1);
	assert_non_null(strstr(lg.last, "hugepages required"));
	assert_int_equal(test_hugepages_free(), before); /* nothing kept */
}

static void test_region_is_sealed_against_resize(void **state)
{
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_PREFER, NULL);
	struct fdx_region *r;
	int seals, fd;

	(void)state;
	assert_int_equal(fdx_region_create(&o, &r), 0);
	fd = fdx_region_fd(r);
	seals = fcntl(fd, F_GET_SEALS);
	assert_true(seals >= 0);
	assert_true(seals & F_SEAL_SHRINK);
	assert_true(seals & F_SEAL_GROW);
	assert_true(seals & F_SEAL_SEAL);
	/* Sizes aligned to the page size, so hugetlbfs cannot refuse them for alignment. */
	assert_int_equal(ftruncate(fd, 0), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(ftruncate(fd, (off_t)fdx_region_size(r) * 2), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
	assert_int_equal(errno, EPERM);
	/* No new writable mapping, even through the owner's own descriptor. */
	if (seals & F_SEAL_FUTURE_WRITE)
		assert_ptr_equal(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
				 MAP_FAILED);
	fdx_region_destroy(r);
}

static void test_region_is_prefaulted(void **state)
{
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_NEVER, NULL);
	struct fdx_region *r;
	unsigned char *vec;
	size_t pages;

	(void)state;
	assert_int_equal(fdx_region_create(&o, &r), 0);
	pages = fdx_region_size(r) / fdx_region_page_size(r);
	vec = calloc(pages, 1);
	assert_non_null(vec);
	assert_int_equal(mincore(fdx_region_ptr(r, 0, 1), fdx_region_size(r), vec), 0);
	for (size_t i = 0; i < pages; i++)
		assert_true(vec[i] & 1);
	free(vec);
	fdx_region_destroy(r);
}

static void test_region_header_is_published(void **state)
{
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_NEVER, NULL);
	const struct fdx__region_hdr *h;
	struct fdx_region *r;

	(void)state;
	assert_int_equal(fdx_region_create(&o, &r), 0);
	h = fdx_region_ptr(r, 0, sizeof(*h));
	assert_non_null(h);
	assert_int_equal(h->magic, FDX_REGION_MAGIC);
	assert_int_equal(atomic_load(&h->layout_version), FDX_REGION_LAYOUT_VERSION);
	assert_int_equal(h->region_size, fdx_region_size(r));
	assert_int_equal(h->seg_size, SEG);
	assert_int_equal(h->seg_count, COUNT);
	assert_int_equal(h->data_offset, SEG);
	fdx_region_destroy(r);
}

static void test_region_ptr_stays_inside_one_segment(void **state)
{
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_NEVER, NULL);
	struct fdx_region *r;
	uint64_t last = (uint64_t)COUNT * SEG; /* offset of the last segment */
	uint8_t *base;

	(void)state;
	assert_int_equal(fdx_region_create(&o, &r), 0);
	base = fdx_region_ptr(r, 0, 1);
	assert_non_null(base);
	assert_ptr_equal(fdx_region_ptr(r, SEG, SEG), base + SEG);
	assert_ptr_equal(fdx_region_ptr(r, last, SEG), base + last);
	assert_ptr_equal(fdx_region_ptr(r, last + SEG - 1, 1), base + last + SEG - 1);
	assert_null(fdx_region_ptr(r, SEG, SEG + 1)); /* longer than a segment */
	assert_null(fdx_region_ptr(r, SEG + 1, SEG)); /* crosses into the next */
	assert_null(fdx_region_ptr(r, last + SEG, 1)); /* past the last segment */
	assert_null(fdx_region_ptr(r, SEG, 0)); /* empty */
	assert_null(fdx_region_ptr(r, UINT64_MAX, 1)); /* overflow */
	assert_null(fdx_region_ptr(r, UINT64_MAX - 2, 8)); /* wraps around */
	assert_null(fdx_region_ptr(NULL, SEG, 1));
	fdx_region_destroy(r);
}

static void test_region_accessors_accept_null(void **state)
{
	(void)state;
	fdx_region_destroy(NULL);
	assert_int_equal(fdx_region_fd(NULL), -1);
	assert_int_equal(fdx_region_size(NULL), 0);
	assert_int_equal(fdx_region_page_size(NULL), 0);
	assert_int_equal(fdx_region_is_hugetlb(NULL), 0);
	assert_int_equal(fdx_region_is_readonly(NULL), 0);
	assert_int_equal(fdx_region_seg_size(NULL), 0);
	assert_int_equal(fdx_region_seg_count(NULL), 0);
}

static void test_region_attach_maps_read_only(void **state)
{
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_PREFER, NULL);
	struct fdx_region *r, *peer;
	uint8_t *w, *rd;

	(void)state;
	assert_int_equal(fdx_region_create(&o, &r), 0);
	w = fdx_region_ptr(r, 3 * SEG, SEG);
	memset(w, 0xa5, SEG);
	assert_int_equal(fdx_region_attach(fdx_region_fd(r), fdx_region_size(r), NULL, NULL, &peer),
			 0);
	assert_int_equal(fdx_region_is_readonly(peer), 1);
	assert_int_equal(fdx_region_is_hugetlb(peer), fdx_region_is_hugetlb(r));
	assert_int_equal(fdx_region_page_size(peer), fdx_region_page_size(r));
	assert_int_equal(fdx_region_seg_size(peer), SEG);
	assert_int_equal(fdx_region_seg_count(peer), COUNT);
	rd = fdx_region_ptr(peer, 3 * SEG, SEG);
	assert_ptr_not_equal(rd, w);
	assert_memory_equal(rd, w, SEG);
	w[17] = 0x5a; /* the owner's writes show through the shared mapping */
	assert_int_equal(rd[17], 0x5a);
	/* The mapping cannot be made writable. */
	assert_int_equal(mprotect(fdx_region_ptr(peer, 0, 1), 4096, PROT_READ | PROT_WRITE), -1);
	/* The peer holds its own descriptor. */
	assert_int_not_equal(fdx_region_fd(peer), fdx_region_fd(r));
	fdx_region_destroy(peer);
	fdx_region_destroy(r);
}

static int sealed_memfd(uint64_t size, int seals)
{
	int fd = memfd_create("fdx-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	if (seals)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

static void test_region_attach_refuses_what_it_cannot_trust(void **state)
{
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_NEVER, NULL);
	const int all = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL;
	struct test_log lg = {0};
	struct fdx_region *r, *peer = (void *)1;
	int fds0 = test_count_fds(), fd, p[2];
	char path[] = "/tmp/fdx-test-XXXXXX";

	(void)state;
	assert_int_equal(fdx_region_create(&o, &r), 0);

	/* Unsealed, then each required seal missing in turn. */
	fd = sealed_memfd(fdx_region_size(r), 0);
	assert_int_equal(fdx_region_attach(fd, fdx_region_size(r), test_log_fn, &lg, &peer),
			 FDX_EUNSEALED);
	assert_null(peer);
	assert_non_null(strstr(lg.last, "F_SEAL_SHRINK"));
	close(fd);
	fd = sealed_memfd(fdx_region_size(r), F_SEAL_SHRINK | F_SEAL_GROW);
	assert_int_equal(fdx_region_attach(fd, fdx_region_size(r), test_log_fn, &lg, &peer),
			 FDX_EUNSEALED);
	assert_non_null(strstr(lg.last, "F_SEAL_SEAL"));
	close(fd);
	/* Resize sealed, but holes could still be punched: refused too. */
	fd = sealed_memfd(fdx_region_size(r), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	assert_int_equal(fdx_region_attach(fd, fdx_region_size(r), test_log_fn, &lg, &peer),
			 FDX_EUNSEALED);
	assert_non_null(strstr(lg.last, "F_SEAL_FUTURE_WRITE"));
	close(fd);

	/* Sealed but not the announced size: shorter, and longer. */
	assert_int_equal(fdx_region_attach(fdx_region_fd(r), fdx_region_size(r) + 4096, test_log_fn,
					   &lg, &peer),
			 FDX_ESIZE);
	assert_non_null(strstr(lg.last, "announced"));
	assert_int_equal(fdx_region_attach(fdx_region_fd(r), fdx_region_size(r) - 4096, test_log_fn,
					   &lg, &peer),
			 FDX_ESIZE);

	/* Sealed and sized, but not a region: the header is all zero. */
	fd = sealed_memfd(fdx_region_size(r), all);
	assert_int_equal(fdx_region_attach(fd, fdx_region_size(r), test_log_fn, &lg, &peer),
			 FDX_EBADREGION);
	assert_non_null(strstr(lg.last, "bad header"));
	close(fd);

	/* Not a memfd: a regular file, a pipe. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, (off_t)fdx_region_size(r)), 0);
	assert_int_equal(fdx_region_attach(fd, fdx_region_size(r), test_log_fn, &lg, &peer),
			 FDX_ENOTMEMFD);
	assert_non_null(strstr(lg.last, "memfd"));
	close(fd);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(fdx_region_attach(p[0], 4096, NULL, NULL, &peer), FDX_ENOTMEMFD);
	close(p[0]);
	close(p[1]);

	/* Bad arguments. */
	assert_int_equal(fdx_region_attach(-1, 4096, NULL, NULL, &peer), -EINVAL);
	assert_int_equal(fdx_region_attach(fdx_region_fd(r), 0, NULL, NULL, &peer), -EINVAL);
	assert_int_equal(fdx_region_attach(fdx_region_fd(r), 4096, NULL, NULL, NULL), -EINVAL);
	assert_null(peer);

	fdx_region_destroy(r);
	assert_int_equal(test_count_fds(), fds0); /* nothing leaked on any refusal */
}

static void test_region_attach_refuses_a_lying_header(void **state)
{
	struct fdx_region_opts o = opts(FDX_HUGEPAGE_NEVER, NULL);
	struct fdx_region *r, *peer = (void *)1;
	struct fdx__region_hdr *h;
	struct test_log lg = {0};

	(void)state;
	/* Build a region by hand whose header claims more segments than fit. */
	assert_int_equal(fdx_region_create(&o, &r), 0);
	int fd = sealed_memfd(fdx_region_size(r), 0);
	h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_ptr_not_equal(h, MAP_FAILED);
	memcpy(h, fdx_region_ptr(r, 0, sizeof(*h)), sizeof(*h));
	h->seg_count = COUNT * 4;
	munmap(h, 4096);
	assert_int_equal(fcntl(fd, F_ADD_SEALS,
			       F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL),
			 0);
	assert_int_equal(fdx_region_attach(fd, fdx_region_size(r), test_log_fn, &lg, &peer),
			 FDX_EBADREGION);
	assert_null(peer);
	assert_non_null(strstr(lg.last, "do not fit"));
	close(fd);
	fdx_region_destroy(r);
}

struct shrinker {
	int fd;
	unsigned spin;
	_Atomic int go;
};

static void *shrink_then_seal(void *arg)
{
	struct shrinker *s = arg;

	while (!atomic_load(&s->go))
		;
	for (volatile unsigned i = 0; i < s->spin; i++)
		;
	if (ftruncate(s->fd, 0) == 0)
		fcntl(s->fd, F_ADD_SEALS,
		      F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL);
	return NULL;
}

/*
 * A peer shrinks its memfd and only then seals it, racing our checks: the
 * size must be read after the seals, or we would map a stale size and fault
 * (SIGBUS) reading the header. Bounded by count and time.
 */
static void test_region_attach_survives_a_peer_that_shrinks_then_seals(void **state)
{
	uint64_t end = test_now_ns() + 3000000000ull;
	int refused = 0;

	(void)state;
	srand(7);
	for (int it = 0; it < 3000 && test_now_ns() < end; it++) {
		struct shrinker s = {.spin = (unsigned)(rand() % 20000)};
		struct fdx_region *r = NULL;
		pthread_t t;
		int err;

		s.fd = sealed_memfd(8192, 0);
		atomic_init(&s.go, 0);
		assert_int_equal(pthread_create(&t, NULL, shrink_then_seal, &s), 0);
		atomic_store(&s.go, 1);
		err = fdx_region_attach(s.fd, 8192, NULL, NULL, &r);
		assert_int_equal(pthread_join(t, NULL), 0);
		close(s.fd);
		/* Never accepted (the header is zero), never a crash. */
		assert_true(err == FDX_EUNSEALED || err == FDX_ESIZE || err == FDX_EBADREGION);
		assert_null(r);
		refused++;
	}
	assert_true(refused > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_region_create_rejects_bad_options),
		cmocka_unit_test(test_region_never_uses_small_pages),
		cmocka_unit_test(test_region_prefer_takes_hugepages_or_says_it_fell_back),
		cmocka_unit_test(test_region_require_fails_clearly_without_hugepages),
		cmocka_unit_test(test_region_require_fails_when_hugepages_run_short),
		cmocka_unit_test(test_region_is_sealed_against_resize),
		cmocka_unit_test(test_region_is_prefaulted),
		cmocka_unit_test(test_region_header_is_published),
		cmocka_unit_test(test_region_ptr_stays_inside_one_segment),
		cmocka_unit_test(test_region_accessors_accept_null),
		cmocka_unit_test(test_region_attach_maps_read_only),
		cmocka_unit_test(test_region_attach_refuses_what_it_cannot_trust),
		cmocka_unit_test(test_region_attach_refuses_a_lying_header),
		cmocka_unit_test(test_region_attach_survives_a_peer_that_shrinks_then_seals),
	};
	return cmocka_run_group_tests_name("region", tests, NULL, NULL);
}
