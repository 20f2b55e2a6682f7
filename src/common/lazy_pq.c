/*
 * lazy_pq.c - libpq, loaded when the PostgreSQL store first calls it
 * (common/lazylib.h says why).  Every libpq function ForgeBox calls is
 * listed here with its prototype from libpq-fe.h.
 */
#include <libpq-fe.h>

#include "common/lazylib.h"

fb_lazylib fb_lazy_libpq = FB_LAZYLIB_INIT("libpq.so.5", "the PostgreSQL store");
#define L fb_lazy_libpq

FB_LAZY_VOID(L, PQclear, (PGresult *res), (res))
FB_LAZY_FN(L, char *, PQcmdTuples, (PGresult *res), (res))
FB_LAZY_FN(L, char *, PQcmdStatus, (PGresult *res), (res))
FB_LAZY_FN(L, PGconn *, PQconnectdb, (const char *conninfo), (conninfo))
FB_LAZY_FN(L, PGconn *, PQconnectdbParams,
           (const char *const *keywords, const char *const *values, int expand_dbname),
           (keywords, values, expand_dbname))
FB_LAZY_FN(L, char *, PQerrorMessage, (const PGconn *conn), (conn))
FB_LAZY_FN(L, PGresult *, PQexec, (PGconn *conn, const char *query), (conn, query))
FB_LAZY_FN(L, PGresult *, PQexecParams,
           (PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
            const char *const *paramValues, const int *paramLengths, const int *paramFormats,
            int resultFormat),
           (conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats,
            resultFormat))
FB_LAZY_FN(L, PGresult *, PQprepare,
           (PGconn *conn, const char *stmtName, const char *query, int nParams,
            const Oid *paramTypes),
           (conn, stmtName, query, nParams, paramTypes))
FB_LAZY_FN(L, PGresult *, PQexecPrepared,
           (PGconn *conn, const char *stmtName, int nParams, const char *const *paramValues,
            const int *paramLengths, const int *paramFormats, int resultFormat),
           (conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat))
FB_LAZY_VOID(L, PQfinish, (PGconn *conn), (conn))
FB_LAZY_VOID(L, PQfreemem, (void *ptr), (ptr))
FB_LAZY_FN(L, char *, PQfname, (const PGresult *res, int field_num), (res, field_num))
FB_LAZY_FN(L, Oid, PQftype, (const PGresult *res, int field_num), (res, field_num))
FB_LAZY_FN(L, int, PQgetisnull, (const PGresult *res, int tup_num, int field_num),
           (res, tup_num, field_num))
FB_LAZY_FN(L, int, PQgetlength, (const PGresult *res, int tup_num, int field_num),
           (res, tup_num, field_num))
FB_LAZY_FN(L, char *, PQgetvalue, (const PGresult *res, int tup_num, int field_num),
           (res, tup_num, field_num))
FB_LAZY_FN(L, int, PQnfields, (const PGresult *res), (res))
FB_LAZY_FN(L, int, PQntuples, (const PGresult *res), (res))
FB_LAZY_VOID(L, PQreset, (PGconn *conn), (conn))
FB_LAZY_FN(L, char *, PQresultErrorField, (const PGresult *res, int fieldcode), (res, fieldcode))
FB_LAZY_FN(L, char *, PQresultErrorMessage, (const PGresult *res), (res))
FB_LAZY_FN(L, char *, PQresStatus, (ExecStatusType status), (status))
FB_LAZY_FN(L, ExecStatusType, PQresultStatus, (const PGresult *res), (res))
FB_LAZY_FN(L, PQnoticeProcessor, PQsetNoticeProcessor,
           (PGconn *conn, PQnoticeProcessor proc, void *arg), (conn, proc, arg))
FB_LAZY_FN(L, ConnStatusType, PQstatus, (const PGconn *conn), (conn))
FB_LAZY_FN(L, PGTransactionStatusType, PQtransactionStatus, (const PGconn *conn), (conn))
FB_LAZY_FN(L, unsigned char *, PQunescapeBytea, (const unsigned char *strtext, size_t *retbuflen),
           (strtext, retbuflen))
FB_LAZY_FN(L, char *, PQescapeLiteral, (PGconn *conn, const char *str, size_t len),
           (conn, str, len))
FB_LAZY_FN(L, char *, PQescapeIdentifier, (PGconn *conn, const char *str, size_t len),
           (conn, str, len))
FB_LAZY_FN(L, int, PQserverVersion, (const PGconn *conn), (conn))
/* Asynchronous use (LISTEN/NOTIFY). */
FB_LAZY_FN(L, int, PQsocket, (const PGconn *conn), (conn))
FB_LAZY_FN(L, int, PQconsumeInput, (PGconn *conn), (conn))
FB_LAZY_FN(L, PGnotify *, PQnotifies, (PGconn *conn), (conn))
FB_LAZY_FN(L, int, PQisBusy, (PGconn *conn), (conn))
FB_LAZY_FN(L, int, PQsendQuery, (PGconn *conn, const char *query), (conn, query))
FB_LAZY_FN(L, int, PQsendQueryParams,
           (PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
            const char *const *paramValues, const int *paramLengths, const int *paramFormats,
            int resultFormat),
           (conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats,
            resultFormat))
FB_LAZY_FN(L, PGresult *, PQgetResult, (PGconn *conn), (conn))
FB_LAZY_FN(L, int, PQsetnonblocking, (PGconn *conn, int arg), (conn, arg))
FB_LAZY_FN(L, int, PQflush, (PGconn *conn), (conn))
/* Pipeline mode (pg_audit.c: a group commit in one round trip). */
FB_LAZY_FN(L, int, PQenterPipelineMode, (PGconn *conn), (conn))
FB_LAZY_FN(L, int, PQexitPipelineMode, (PGconn *conn), (conn))
FB_LAZY_FN(L, PGpipelineStatus, PQpipelineStatus, (const PGconn *conn), (conn))
FB_LAZY_FN(L, int, PQpipelineSync, (PGconn *conn), (conn))
FB_LAZY_FN(L, int, PQsendPrepare,
           (PGconn *conn, const char *stmtName, const char *query, int nParams, const Oid *paramTypes),
           (conn, stmtName, query, nParams, paramTypes))
FB_LAZY_FN(L, int, PQsendQueryPrepared,
           (PGconn *conn, const char *stmtName, int nParams, const char *const *paramValues,
            const int *paramLengths, const int *paramFormats, int resultFormat),
           (conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat))
FB_LAZY_FN(L, PGPing, PQping, (const char *conninfo), (conninfo))
FB_LAZY_FN(L, PGPing, PQpingParams,
           (const char *const *keywords, const char *const *values, int expand_dbname),
           (keywords, values, expand_dbname))
