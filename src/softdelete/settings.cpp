/*
 * settings.cpp — soft delete's settings: lifecycle.include_deleted,
 * lifecycle.hard_delete and lifecycle.actor (defined by softdelete::init()).
 */
#include "bridge/guard.hpp"
#include "gucs.hpp"
#include "softdelete/softdelete.hpp"

namespace pg_lifecycle::gucs {

bool include_deleted = false;
bool hard_delete = false;
char* actor = nullptr;

}  // namespace pg_lifecycle::gucs

namespace pg_lifecycle::softdelete {

namespace {

/* Plans embed what these settings decide (hidden rows, soft or hard DELETE):
 * a change must replan cached statements. */
extern "C" void assign_plan_setting(bool newval, void* extra) {
    (void)extra;
    static bool first = true; /* the boot value needs no reset */
    if (!first) ResetPlanCache();
    first = false;
    (void)newval;
}

/* lifecycle.hard_delete can be turned on only by a session for itself (SET,
 * SET LOCAL, set_config, connection options) — never as a default in
 * postgresql.conf or by ALTER DATABASE / ALTER ROLE ... SET, which would reach
 * sessions, the worker and code run as the table's owner that did not ask
 * for it. */
extern "C" bool check_hard_delete(bool* newval, void** extra, GucSource source) {
    (void)extra;
    if (!*newval) return true;
    switch (source) {
        case PGC_S_CLIENT:
        case PGC_S_OVERRIDE:
        case PGC_S_INTERACTIVE:
        case PGC_S_SESSION: return true;
        default:
            GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
            GUC_check_errdetail(
                "lifecycle.hard_delete can only be turned on by a session for itself (SET or SET "
                "LOCAL), not as a default for a database, a role, a function or the server.");
            return false;
    }
}

}  // namespace

void define_settings() {
    bridge::pg_call([] {
        DefineCustomBoolVariable("lifecycle.include_deleted", "Show soft-deleted rows to queries.",
                                 "Off: rows deleted from a table with hide = true are invisible to SELECT, UPDATE "
                                 "and DELETE.",
                                 &gucs::include_deleted, false, PGC_USERSET, 0, nullptr, assign_plan_setting, nullptr);
        DefineCustomBoolVariable("lifecycle.hard_delete", "DELETE on soft-delete tables removes rows for real.",
                                 "Honoured only for the table's owner (or a superuser) acting directly, and only "
                                 "when a session sets it for itself.",
                                 &gucs::hard_delete, false, PGC_USERSET, 0, check_hard_delete, assign_plan_setting,
                                 nullptr);
        DefineCustomStringVariable("lifecycle.actor", "Recorded in deleted_by by soft deletes (empty: current_user).",
                                   nullptr, &gucs::actor, "", PGC_USERSET, 0, nullptr, nullptr, nullptr);
    });
}

}  // namespace pg_lifecycle::softdelete
