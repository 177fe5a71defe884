/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

void fdx__log_init(struct fdx__log *lg, fdx_log_fn fn, void *ud, uint32_t level)
{
	lg->fn = fn;
	lg->ud = ud;
	if (level == 0)
		level = FDX_LOG_WARN;
	if (level > FDX_LOG_DEBUG)
		level = FDX_LOG_DEBUG;
	lg->level = (enum fdx_log_level)level;
}

void fdx__log_emit(const struct fdx__log *lg, enum fdx_log_level lvl, const char *func, int line,
		   const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lg->fn(lg->ud, lvl, func, line, msg);
}
