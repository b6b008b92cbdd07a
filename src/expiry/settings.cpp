/*
 * settings.cpp — the settings of row expiry and sessions:
 * lifecycle.session_history_retention.
 */
#include "bridge/guard.hpp"
#include "expiry/expiry.hpp"
#include "gucs.hpp"

namespace pg_lifecycle::gucs {

char* session_history_retention = nullptr;

}  // namespace pg_lifecycle::gucs

namespace pg_lifecycle::expiry {

void init() {
    bridge::pg_call([] {
        DefineCustomStringVariable("lifecycle.session_history_retention",
                                   "How long ended sessions stay in lifecycle.sessions before the worker removes them.",
                                   nullptr, &gucs::session_history_retention, "30 days", PGC_SIGHUP, 0,
                                   gucs::check_positive_interval, nullptr, nullptr);
    });
}

}  // namespace pg_lifecycle::expiry
