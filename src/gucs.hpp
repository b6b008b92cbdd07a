/*
 * gucs.hpp — the values of the lifecycle.* settings that more than one file
 * reads, and the helpers of their check hooks.  Each capability defines its
 * own settings in its init(), called from _PG_init (module.cpp):
 *   worker::init()      src/worker/settings.cpp
 *   expiry::init()      src/expiry/settings.cpp
 *   softdelete::init()  src/softdelete/settings.cpp
 *   tokens::init()      src/tokens/settings.cpp (its values: tokens.hpp)
 */
#pragma once

#include "bridge/pg.hpp"

namespace pg_lifecycle::gucs {

/* The worker's (src/worker/settings.cpp). */
extern bool enabled;            /* lifecycle.enabled */
extern int naptime_ms;          /* lifecycle.naptime */
extern int worker_nice;         /* lifecycle.worker_nice */
extern int max_workers;         /* lifecycle.max_workers */
extern char* history_retention; /* lifecycle.history_retention (interval text) */

/* Sessions' (src/expiry/settings.cpp). */
extern char* session_history_retention; /* lifecycle.session_history_retention (interval text) */

/* Soft delete's (src/softdelete/settings.cpp). */
extern bool include_deleted; /* lifecycle.include_deleted */
extern bool hard_delete;     /* lifecycle.hard_delete */
extern char* actor;          /* lifecycle.actor */

/* Loaded by shared_preload_libraries (set in _PG_init). */
extern bool preloaded;

/* The body of a check hook for an interval-valued setting: it must parse and
 * be positive (or zero, with allow_zero).  The parsed value goes to *extra
 * (guc_malloc'ed; guc.c frees it), for settings read on a hot path. */
bool check_interval_setting(char** newval, void** extra, bool allow_zero, const char* example);

/* A check hook: a positive interval ("7 days"). */
bool check_positive_interval(char** newval, void** extra, GucSource source);

/* The value of an interval-valued setting, parsed (validated by its check hook). */
Interval* interval_value(const char* text);

}  // namespace pg_lifecycle::gucs
