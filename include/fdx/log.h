/* SPDX-License-Identifier: MIT */
/**
 * @file log.h
 * The logging hook. fdx never prints: objects that can explain a failure take
 * a log function in their options and call it with one line per event.
 */
#ifndef FDX_FDX_LOG_H
#define FDX_FDX_LOG_H

#include <fdx/common.h>

FDX_BEGIN_DECLS

/** Severity of a log message; a sink receives levels <= its configured level. */
enum fdx_log_level {
	FDX_LOG_ERR = 1,
	FDX_LOG_WARN = 2,
	FDX_LOG_INFO = 3,
	FDX_LOG_DEBUG = 4,
};

/**
 * A log sink. Called on the thread where the event happened (a caller's
 * thread or one of fdx's own: the exchange's gRPC, accept and io_uring
 * threads), possibly with fdx locks held: it must not block for long and must
 * not call back into the object that logs. It must stay callable until the
 * object it was given to is destroyed.
 *
 * @param ud the user data given with the function.
 * @param lvl the message's level.
 * @param func the fdx function that logs, a static string.
 * @param line its source line.
 * @param msg the message, NUL-terminated, valid only during the call.
 */
typedef void (*fdx_log_fn)(void *ud, enum fdx_log_level lvl, const char *func, int line,
			   const char *msg);

FDX_END_DECLS

#endif /* FDX_FDX_LOG_H */
