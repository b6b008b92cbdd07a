/*
 * compat.hpp — every difference between the PostgreSQL versions we support
 * (15, 16, 17, 18), in one place.
 *
 * Included by pg.hpp after PostgreSQL's headers; nothing else tests
 * PG_VERSION_NUM.  Each guard is written at the release that made the change,
 * and provides the NEW name on the older versions, so that call sites read the
 * same on every version.
 */
#pragma once

#include <cstdlib>

/* PG_VERSION_NUM comes from pg_config.h, through postgres.h (pg.hpp). */
#if PG_VERSION_NUM < 150000
#error "pg_lifecycle needs PostgreSQL 15 or later"
#endif

extern "C" {
#include "catalog/pg_authid.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h" /* getRTEPermissionInfo */
#endif
}

/*
 * 16: the pg_<object>_ownercheck and
 * pg_<object>_aclcheck families became object_ownercheck(classid, objid,
 * roleid) and object_aclcheck(classid, objid, roleid, mode); 15's
 * pg_class_ownercheck & co. are gone from 16 on.  (pg_class_aclcheck and
 * pg_attribute_aclcheck stay.)
 */
#if PG_VERSION_NUM < 160000
inline bool object_ownercheck(Oid classid, Oid objectid, Oid roleid) {
    switch (classid) {
        case RelationRelationId: return pg_class_ownercheck(objectid, roleid);
        case NamespaceRelationId: return pg_namespace_ownercheck(objectid, roleid);
        case DatabaseRelationId: return pg_database_ownercheck(objectid, roleid);
        case ProcedureRelationId: return pg_proc_ownercheck(objectid, roleid);
        default: elog(ERROR, "object_ownercheck: unsupported class %u", classid); return false;
    }
}
inline AclResult object_aclcheck(Oid classid, Oid objectid, Oid roleid, AclMode mode) {
    switch (classid) {
        case ProcedureRelationId: return pg_proc_aclcheck(objectid, roleid, mode);
        case NamespaceRelationId: return pg_namespace_aclcheck(objectid, roleid, mode);
        case DatabaseRelationId: return pg_database_aclcheck(objectid, roleid, mode);
        default: elog(ERROR, "object_aclcheck: unsupported class %u", classid); return ACLCHECK_NO_PRIV;
    }
}
#endif

/*
 * 16: the permission fields of a RangeTblEntry
 * (requiredPerms, checkAsUser, selectedCols, insertedCols, updatedCols) moved
 * to an RTEPermissionInfo in Query.rteperminfos.
 */
namespace pg_lifecycle::compat {
inline void add_updated_column(Query* q, RangeTblEntry* rte, AttrNumber attnum) {
#if PG_VERSION_NUM >= 160000
    RTEPermissionInfo* perm = getRTEPermissionInfo(q->rteperminfos, rte);
    perm->updatedCols = bms_add_member(perm->updatedCols, attnum - FirstLowInvalidHeapAttributeNumber);
#else
    (void)q;
    rte->updatedCols = bms_add_member(rte->updatedCols, attnum - FirstLowInvalidHeapAttributeNumber);
#endif
}
}  // namespace pg_lifecycle::compat

/*
 * 16: the tree walkers and mutators take typed callbacks
 * (tree_walker_callback, tree_mutator_callback) through macros.  15 declares
 * them `bool (*)()`, which C++ reads as "no arguments": cast there.
 */
namespace pg_lifecycle::compat {
#if PG_VERSION_NUM >= 160000
inline tree_walker_callback walker(bool (*fn)(Node*, void*)) { return fn; }
inline tree_mutator_callback mutator(Node* (*fn)(Node*, void*)) { return fn; }
#else
inline auto walker(bool (*fn)(Node*, void*)) { return reinterpret_cast<bool (*)()>(reinterpret_cast<void (*)()>(fn)); }
inline auto mutator(Node* (*fn)(Node*, void*)) {
    return reinterpret_cast<Node* (*)()>(reinterpret_cast<void (*)()>(fn));
}
#endif
}  // namespace pg_lifecycle::compat

/*
 * 16: GUC values and check-hook "extra" data live in a
 * memory context and are released with guc_free(); guc_malloc() is exported.
 * 15 frees them with free(), and its guc_malloc is static: malloc there.
 */
#if PG_VERSION_NUM < 160000
inline void* guc_malloc(int elevel, size_t size) {
    void* data = std::malloc(size);
    if (data == nullptr) ereport(elevel, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
    return data;
}
#endif

/*
 * 16: pgstat_fetch_stat_beentry() takes a BackendId, no
 * longer an index into the local snapshot (17 removed it:
 * pgstat_get_beentry_by_proc_number); iterating by index is
 * pgstat_get_local_beentry_by_index(), 15's pgstat_fetch_stat_local_beentry().
 */
#if PG_VERSION_NUM < 160000
inline LocalPgBackendStatus* pgstat_get_local_beentry_by_index(int idx) { return pgstat_fetch_stat_local_beentry(idx); }
#endif

/*
 * dbcommands.c's have_createdb_privilege() became extern in a recent minor
 * release (15.20's header declares it, 15.18's does not; 17.x and 18.x here
 * do).  Rather than guard on a minor version we could not verify for every
 * branch, we use our own copy everywhere: superuser, or rolcreatedb of the
 * current role, as dbcommands.c decides.
 */
namespace pg_lifecycle::compat {
inline bool have_createdb_privilege() {
    if (superuser()) return true;
    bool result = false;
    HeapTuple tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
    if (HeapTupleIsValid(tuple)) {
        result = ((Form_pg_authid)GETSTRUCT(tuple))->rolcreatedb;
        ReleaseSysCache(tuple);
    }
    return result;
}
}  // namespace pg_lifecycle::compat

/*
 * 17: the IsBackgroundWorker flag gave way to AmBackgroundWorkerProcess()
 * (MyBackendType == B_BG_WORKER).
 */
#if PG_VERSION_NUM < 170000
#define AmBackgroundWorkerProcess() (IsBackgroundWorker)
#endif

/*
 * 17: PGPROC's lxid moved into PGPROC.vxid (with the proc
 * number).
 */
namespace pg_lifecycle::compat {
inline LocalTransactionId my_lxid() {
#if PG_VERSION_NUM >= 170000
    return MyProc->vxid.lxid;
#else
    return MyProc->lxid;
#endif
}
}  // namespace pg_lifecycle::compat

/*
 * Not a version guard: a MERGE with INSERT and UPDATE actions on a
 * partitioned table gets wrong UPDATE NEW transition tables from some minor
 * releases (18.6 here; 15.18's code is the same, 15.20 and 17.12 are fixed).
 * An extension built against one minor release runs on the later ones, so
 * PG_VERSION_NUM cannot tell: src/counts/capture.cpp (wrap_merge_source)
 * works around it on every version.
 */

/*
 * 18: RETURNING can name OLD and NEW (Var.varreturningtype).
 * Before 18 every Var in RETURNING is the statement's default.
 */
namespace pg_lifecycle::compat {
inline bool is_returning_new(const Var* var) {
#if PG_VERSION_NUM >= 180000
    return var->varreturningtype == VAR_RETURNING_NEW;
#else
    (void)var;
    return false;
#endif
}
}  // namespace pg_lifecycle::compat

/*
 * 18: ExecutorRun lost its execute_once argument (ExecutorRun_hook_type and
 * standard_ExecutorRun).  Write a hook as
 *     void hook(QueryDesc* qd, ScanDirection dir, uint64 count LIFECYCLE_EXECUTE_ONCE_PARAM)
 * and pass the arguments on with `qd, dir, count LIFECYCLE_EXECUTE_ONCE_ARG`.
 */
#if PG_VERSION_NUM >= 180000
#define LIFECYCLE_EXECUTE_ONCE_PARAM
#define LIFECYCLE_EXECUTE_ONCE_ARG
#else
#define LIFECYCLE_EXECUTE_ONCE_PARAM , bool execute_once
#define LIFECYCLE_EXECUTE_ONCE_ARG , execute_once
#endif
