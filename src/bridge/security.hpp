/*
 * security.hpp — how pg_lifecycle runs SQL as somebody else, and the checks
 * of who may do what (SPEC.md §5; the README's "Security model").
 *
 * The rules, enforced here rather than at each call site:
 *
 *  - Every statement the extension prepares or executes through spi.hpp runs
 *    in a GUC nest level with search_path = pg_catalog, pg_temp, left with
 *    AtEOXact_GUC(false): names in our SQL can only resolve to PostgreSQL's
 *    own objects (and our schema-qualified ones), whatever the caller's or
 *    the database's search_path, and nothing a trigger SETs survives the
 *    statement.  The few statements whose user triggers must see the
 *    caller's settings (a restore's UPDATE, the cascade of a soft delete) are
 *    written fully schema-qualified and run inside a CallersSearchPath scope.
 *  - Code runs as another role only inside an AsRole scope: the role switch
 *    is a security-restricted operation (no SET ROLE, no temporary objects,
 *    no cursors outliving it), in a GUC nest level rolled back on exit.
 *  - Our own schema is found through pg_extension, never by its name.
 */
#pragma once

#include "bridge/guard.hpp"

#include <functional>

namespace pg_lifecycle::bridge {

/* The search path of every statement the extension runs. */
inline constexpr const char* pinned_search_path = "pg_catalog, pg_temp";

/* Runs the enclosing scope as `role` in a security-restricted operation and a
 * GUC nest level whose changes are rolled back on the way out (also when an
 * exception unwinds the scope).  `extra_flags` adds security-context flags
 * (SECURITY_NOFORCE_RLS for foreign-key style work). */
class AsRole {
public:
    explicit AsRole(Oid role, int extra_flags = 0) : AsRole(role, extra_flags | SECURITY_RESTRICTED_OPERATION, 0) {}
    ~AsRole();
    AsRole(const AsRole&) = delete;
    AsRole& operator=(const AsRole&) = delete;

protected:
    /* The security-context flags exactly as given (the int distinguishes it). */
    AsRole(Oid role, int flags, int);

private:
    Oid saved_user_;
    int saved_context_;
    int nest_;
};

/* Runs the enclosing scope as a table's owner the way PostgreSQL runs a
 * foreign key's own actions and checks (ri_triggers.c): a local user id
 * change outside the table's row security, in a GUC nest level as AsRole —
 * but not a security-restricted operation.  Inside one PostgreSQL refuses to
 * queue a deferred trigger (42501), and every UPDATE of a row this
 * transaction wrote queues one for each DEFERRABLE INITIALLY DEFERRED key or
 * constraint trigger on it.  Only for what PostgreSQL itself would do as that
 * owner when the caller's DELETE cascades: soft delete's cascade, the row's
 * event stamp, the rows an event brings back, and the parent/child checks.
 * Code running here is the table owner's own (its triggers), with the
 * owner's rights, as in a foreign-key cascade; SET ROLE and SET SESSION
 * AUTHORIZATION are refused (local user id change), settings are rolled back. */
class AsKeyActionOwner : public AsRole {
public:
    explicit AsKeyActionOwner(Oid owner) : AsRole(owner, SECURITY_NOFORCE_RLS, 0) {}
};

/* Statements executed in this scope keep the caller's search_path (their
 * text must then be fully schema-qualified, operators included: see
 * qualified_operator).  For statements on a user's table whose triggers must
 * see the session's settings. */
class CallersSearchPath {
public:
    CallersSearchPath();
    ~CallersSearchPath();
    CallersSearchPath(const CallersSearchPath&) = delete;
    CallersSearchPath& operator=(const CallersSearchPath&) = delete;

private:
    bool saved_;
};

/* Used by spi.cpp around every prepare and execute: pins search_path (unless
 * in a CallersSearchPath scope) in a GUC nest level rolled back on exit. */
class StatementScope {
public:
    StatementScope();
    ~StatementScope();
    StatementScope(const StatementScope&) = delete;
    StatementScope& operator=(const StatementScope&) = delete;

private:
    int nest_;
};

/* A plain or partitioned table that exists (42P01 / 42809 otherwise); returns
 * its relkind.  `feature` names what needs it, for the hint. */
char require_table(Oid relid, const char* feature);
/* Owner of a relation; throws 42P01 if it does not exist. */
Oid relation_owner(Oid relid);
/* The pg_lifecycle extension in this database (InvalidOid when not installed). */
Oid extension_oid();
/* Its schema, found through pg_extension (InvalidOid when not installed). */
Oid extension_schema();
/* A relation of our schema by name, or InvalidOid (also when not installed). */
Oid extension_relation(const char* name);
/* The role that owns the pg_lifecycle extension (55000 when not installed). */
Oid extension_owner();
/* Throws 42501 unless the current user owns relid (or is a superuser). */
void require_owner(Oid relid, const char* action);
/* Whether the current user owns relid (or is a superuser), without a lock. */
bool owns(Oid relid);
/* "OPERATOR(schema.name)" for an operator, to write it into SQL text so that
 * no search_path can change which operator runs. */
std::string qualified_operator(Oid opno);
/* The default equality operator of a type ("OPERATOR(pg_catalog.=)" for
 * the built-in types); 42883 when it has none. */
std::string equality_operator(Oid type);

/* The role seen from outside: true when code runs as the session's current
 * role directly — not inside a SECURITY DEFINER function, a foreign-key
 * check or action, a security-restricted operation (the worker, maintenance,
 * index expressions) or a background worker. */
bool acting_as_outer_user();

/* Runs body with the user setting `name` = `value` for this session, in a
 * GUC nest level whose changes (this one, and whatever body's statements set)
 * are rolled back afterwards, also when body raises. */
void with_setting(const char* name, const char* value, const std::function<void()>& body);

}  // namespace pg_lifecycle::bridge
