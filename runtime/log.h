/* SPDX-License-Identifier: MIT */
/* Private logging: the level is checked before anything is formatted. */
#ifndef FDX_RUNTIME_LOG_H
#define FDX_RUNTIME_LOG_H

#include <stdint.h>

#include <fdx/log.h>

struct fdx__log {
	fdx_log_fn fn;
	void *ud;
	enum fdx_log_level level;
};

void fdx__log_init(struct fdx__log *lg, fdx_log_fn fn, void *ud, uint32_t level);

__attribute__((format(printf, 5, 6))) void fdx__log_emit(const struct fdx__log *lg,
							 enum fdx_log_level lvl, const char *func,
							 int line, const char *fmt, ...);

#define FDX_LOG_AT(lg, lvl, ...)                                                         \
	do {                                                                             \
		const struct fdx__log *fdx__lg_ = (lg);                                  \
		if (fdx__lg_ && fdx__lg_->fn && (lvl) <= fdx__lg_->level)                \
			fdx__log_emit(fdx__lg_, (lvl), __func__, __LINE__, __VA_ARGS__); \
	} while (0)

#define FDX_LOG_ERR(lg, ...) FDX_LOG_AT(lg, FDX_LOG_ERR, __VA_ARGS__)
#define FDX_LOG_WARN(lg, ...) FDX_LOG_AT(lg, FDX_LOG_WARN, __VA_ARGS__)
#define FDX_LOG_INFO(lg, ...) FDX_LOG_AT(lg, FDX_LOG_INFO, __VA_ARGS__)
#define FDX_LOG_DEBUG(lg, ...) FDX_LOG_AT(lg, FDX_LOG_DEBUG, __VA_ARGS__)

#endif /* FDX_RUNTIME_LOG_H */
