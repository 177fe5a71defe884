/* SPDX-License-Identifier: MIT */
/*
 * A table of pointers by 32-bit id: open addressing with linear probing and
 * backward-shift deletion, a power-of-two size at most half full. Ids may
 * come from a peer, so they are mixed before use. Not thread-safe: its
 * owner's lock guards it. Used for the channels of a control stream (either
 * side).
 */
#ifndef FDX_RUNTIME_IDMAP_H
#define FDX_RUNTIME_IDMAP_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

struct fdx__idmap_ent {
	uint32_t id;
	void *p; /* NULL: the slot is empty */
};

struct fdx__idmap {
	struct fdx__idmap_ent *e;
	uint32_t cap, n;
};

static inline uint32_t fdx__idmap_slot(const struct fdx__idmap *m, uint32_t id)
{
	return (uint32_t)(((uint64_t)id * 0x9e3779b97f4a7c15ull) >> 32) & (m->cap - 1);
}

/* The entry with that id, or NULL. */
static inline void *fdx__idmap_get(const struct fdx__idmap *m, uint32_t id)
{
	if (!m->cap)
		return NULL;
	for (uint32_t i = fdx__idmap_slot(m, id); m->e[i].p; i = (i + 1) & (m->cap - 1))
		if (m->e[i].id == id)
			return m->e[i].p;
	return NULL;
}

/* Add p under id (not there yet) where fdx__idmap_reserve() made room. */
static inline void fdx__idmap_put(struct fdx__idmap *m, uint32_t id, void *p)
{
	uint32_t i = fdx__idmap_slot(m, id);

	while (m->e[i].p)
		i = (i + 1) & (m->cap - 1);
	m->e[i].id = id;
	m->e[i].p = p;
	m->n++;
}

/* Room for one more entry: 0, or -ENOMEM (the table is unchanged). */
static inline int fdx__idmap_reserve(struct fdx__idmap *m)
{
	struct fdx__idmap_ent *old = m->e;
	uint32_t oldcap = m->cap, cap;

	if (2 * (m->n + 1) <= m->cap)
		return 0;
	if (m->cap >= (1u << 30))
		return -ENOMEM;
	cap = m->cap ? 2 * m->cap : 16;
	m->e = calloc(cap, sizeof(*m->e));
	if (!m->e) {
		m->e = old;
		return -ENOMEM;
	}
	m->cap = cap;
	m->n = 0;
	for (uint32_t i = 0; i < oldcap; i++)
		if (old[i].p)
			fdx__idmap_put(m, old[i].id, old[i].p);
	free(old);
	return 0;
}

/* Remove the entry with that id, if there is one. */
static inline void fdx__idmap_del(struct fdx__idmap *m, uint32_t id)
{
	uint32_t mask = m->cap - 1, i, j;

	if (!m->cap)
		return;
	for (i = fdx__idmap_slot(m, id); m->e[i].id != id || !m->e[i].p; i = (i + 1) & mask)
		if (!m->e[i].p)
			return;
	/* Shift the rest of the cluster back over the hole. */
	for (j = (i + 1) & mask; m->e[j].p; j = (j + 1) & mask) {
		uint32_t home = fdx__idmap_slot(m, m->e[j].id);

		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->e[i] = m->e[j];
			i = j;
		}
	}
	m->e[i].p = NULL;
	m->n--;
}

/* Forget every entry (not what they point to) and the table itself. */
static inline void fdx__idmap_free(struct fdx__idmap *m)
{
	free(m->e);
	m->e = NULL;
	m->cap = m->n = 0;
}

#endif /* FDX_RUNTIME_IDMAP_H */
