/* SPDX-License-Identifier: MIT */
/**
 * @file fdx.h
 * fdx: a shared-memory, zero-copy data exchange with credit-based flow
 * control for stream-processing TaskManagers. This umbrella header includes
 * the whole public API.
 */
#ifndef FDX_FDX_FDX_H
#define FDX_FDX_FDX_H

#include <fdx/common.h>
#include <fdx/version.h>
#include <fdx/error.h>
#include <fdx/log.h>
#include <fdx/region.h>
#include <fdx/network_buffer_pool.h>
#include <fdx/local_buffer_pool.h>
#include <fdx/exchange.h>
#include <fdx/partition.h>
#include <fdx/gate.h>

#endif /* FDX_FDX_FDX_H */
