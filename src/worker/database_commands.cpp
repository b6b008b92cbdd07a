/*
 * database_commands.cpp — statements that need a database to have no other sessions
 * (DROP DATABASE, ALTER DATABASE … RENAME / SET TABLESPACE, CREATE DATABASE …
 * TEMPLATE): our worker connected to it would make them fail with "database is
 * being accessed by other users".  The hook pauses the database's worker and
 * waits for it to leave first, as autovacuum workers are moved out of the way.
 * CREATE / DROP EXTENSION pg_lifecycle tell the launcher (at commit).
 */
#include "bridge/guard.hpp"
#include "worker/launcher.hpp"

namespace pg_lifecycle::worker {

using bridge::pg_call;

namespace {

ProcessUtility_hook_type prev_utility_hook = nullptr;

/* CREATE / DROP EXTENSION pg_lifecycle ran in this transaction: at commit the
 * launcher is told, so that the database is visited (or forgotten) at once
 * instead of after the 10 minutes between visits of a database without it. */
bool extension_change_pending = false;

extern "C" void extension_change_at_commit(XactEvent event, void* arg) {
    (void)arg;
    if (!extension_change_pending) return;
    if (event == XACT_EVENT_COMMIT) {
        extension_change_pending = false;
        bridge::entry_guard([] { extension_changed(); });
    } else if (event == XACT_EVENT_ABORT) {
        extension_change_pending = false;
    }
}

bool names_our_extension(Node* stmt) {
    if (IsA(stmt, CreateExtensionStmt)) return strcmp(((CreateExtensionStmt*)stmt)->extname, "pg_lifecycle") == 0;
    if (IsA(stmt, DropStmt) && ((DropStmt*)stmt)->removeType == OBJECT_EXTENSION) {
        ListCell* lc;
        foreach (lc, ((DropStmt*)stmt)->objects) {
            if (strcmp(strVal(lfirst(lc)), "pg_lifecycle") == 0) return true;
        }
    }
    return false;
}

void note_extension_change(PlannedStmt* pstmt) {
    static bool registered = false;
    if (!names_our_extension(pstmt->utilityStmt)) return;
    if (!registered) {
        pg_call([] { RegisterXactCallback(extension_change_at_commit, nullptr); });
        registered = true;
    }
    extension_change_pending = true;
}

/* The database the statement needs to itself, or nullptr. */
const char* exclusive_database(Node* stmt) {
    ListCell* lc;
    switch (nodeTag(stmt)) {
        case T_DropdbStmt: return ((DropdbStmt*)stmt)->dbname;
        case T_RenameStmt:
            return ((RenameStmt*)stmt)->renameType == OBJECT_DATABASE ? ((RenameStmt*)stmt)->subname : nullptr;
        case T_CreatedbStmt:
            foreach (lc, ((CreatedbStmt*)stmt)->options) {
                auto* def = (DefElem*)lfirst(lc);
                if (strcmp(def->defname, "template") == 0 && def->arg != nullptr) return defGetString(def);
            }
            return nullptr;
        case T_AlterDatabaseStmt:
            foreach (lc, ((AlterDatabaseStmt*)stmt)->options) {
                auto* def = (DefElem*)lfirst(lc);
                if (strcmp(def->defname, "tablespace") == 0) return ((AlterDatabaseStmt*)stmt)->dbname;
            }
            return nullptr;
        default: return nullptr;
    }
}

/* Whether the current role passes the statement's own permission checks on
 * the database (it will fail anyway otherwise: the worker stays). */
bool may_run(Node* stmt, Oid dboid) {
    return pg_call([stmt, dboid] {
        bool owner = object_ownercheck(DatabaseRelationId, dboid, GetUserId());
        switch (nodeTag(stmt)) {
            case T_DropdbStmt:
            case T_AlterDatabaseStmt: return owner;
            case T_RenameStmt: return owner && compat::have_createdb_privilege();
            case T_CreatedbStmt: {
                if (!compat::have_createdb_privilege()) return false;
                HeapTuple tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
                if (!HeapTupleIsValid(tup)) return false;
                bool is_template = ((Form_pg_database)GETSTRUCT(tup))->datistemplate;
                ReleaseSysCache(tup);
                return is_template || owner;
            }
            default: return false;
        }
    });
}

/* Before the statement: the database it needs, with its worker gone. */
Oid before(PlannedStmt* pstmt) {
    const char* name = pg_call([pstmt] { return exclusive_database(pstmt->utilityStmt); });
    if (name == nullptr) return InvalidOid;
    Oid dboid = pg_call([name] { return get_database_oid(name, true); });
    if (!OidIsValid(dboid) || dboid == MyDatabaseId) return InvalidOid;
    /* Permission before acting: nobody else stops a database's worker. */
    if (!may_run(pstmt->utilityStmt, dboid)) return InvalidOid;
    return pause_database(dboid, 60) ? dboid : InvalidOid;
}

extern "C" void lifecycle_process_utility(PlannedStmt* pstmt, const char* query_string, bool read_only_tree,
                                          ProcessUtilityContext context, ParamListInfo params,
                                          QueryEnvironment* query_env, DestReceiver* dest, QueryCompletion* qc) {
    /* On error the pause simply runs out (60 s). */
    Oid paused = bridge::entry_guard([pstmt] { return before(pstmt); });
    if (prev_utility_hook) {
        prev_utility_hook(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
    } else {
        standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
    }
    if (OidIsValid(paused)) bridge::entry_guard([paused] { resume_database(paused); });
    bridge::entry_guard([pstmt] { note_extension_change(pstmt); });
}

}  // namespace

void install_utility_hook() {
    prev_utility_hook = ProcessUtility_hook;
    ProcessUtility_hook = lifecycle_process_utility;
}

}  // namespace pg_lifecycle::worker
