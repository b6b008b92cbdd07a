/*
 * security.hpp — acting as another role for a scope, and ownership checks.
 */
#pragma once

#include "bridge/guard.hpp"

namespace pg_lifecycle::bridge {

/* Runs the enclosing scope as `role` (SetUserIdAndSecContext), restoring the
 * previous user on the way out, also when an exception unwinds the scope.
 * Transaction abort restores it too, as for any SECURITY DEFINER call. */
class AsRole {
public:
    AsRole(Oid role, int extra_flags = 0) noexcept {
        GetUserIdAndSecContext(&saved_user_, &saved_context_);
        SetUserIdAndSecContext(role, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | extra_flags);
    }
    ~AsRole() { SetUserIdAndSecContext(saved_user_, saved_context_); }
    AsRole(const AsRole&) = delete;
    AsRole& operator=(const AsRole&) = delete;

private:
    Oid saved_user_;
    int saved_context_;
};

/* A plain or partitioned table that exists (42P01 / 42809 otherwise); returns
 * its relkind.  `feature` names what needs it, for the hint. */
char require_table(Oid relid, const char* feature);
/* Owner of a relation; throws 42P01 if it does not exist. */
Oid relation_owner(Oid relid);
/* The role that owns the pg_lifecycle extension. */
Oid extension_owner();
/* Throws 42501 unless the current user owns relid (or is a superuser). */
void require_owner(Oid relid, const char* action);

}  // namespace pg_lifecycle::bridge
