/*
 * module.cpp — _PG_init: each capability's init() (its settings, hooks and
 * callbacks), the maintenance tasks in pass order, the background worker's
 * registration, and nothing else.
 */
#include "bridge/guard.hpp"
#include "bridge/spi.hpp"
#include "counts/counts.hpp"
#include "expiry/expiry.hpp"
#include "extension/extension.hpp"
#include "gucs.hpp"
#include "softdelete/softdelete.hpp"
#include "tokens/tokens.hpp"
#include "worker/launcher.hpp"

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

namespace {

using namespace pg_lifecycle;

void init_cpp() {
    gucs::preloaded = process_shared_preload_libraries_in_progress;
    /* Each capability's init(): its settings, hooks and callbacks. */
    worker::init();
    expiry::init();
    tokens::init();
    counts::init();
    softdelete::init();
    /* Maintenance tasks, in the order a pass runs them. */
    expiry::register_expire_task();
    softdelete::register_retention_task();
    expiry::register_session_tasks();
    tokens::register_purge_task();
    worker::register_history_task();
    counts::register_fold_task();
    /* Only now, with every lifecycle.* setting defined: a misspelt one in
     * postgresql.conf is reported (reserving earlier would drop the values of
     * settings defined later). */
    bridge::pg_call([] { MarkGUCPrefixReserved("lifecycle"); });
    /* The launcher exists only when preloaded; the SQL functions work either way. */
    if (process_shared_preload_libraries_in_progress) {
        worker::register_launcher();
        worker::install_utility_hook();
        extension::install_utility_hook();
    }
}

}  // namespace

extern "C" void _PG_init(void) { pg_lifecycle::bridge::entry_guard(init_cpp); }
