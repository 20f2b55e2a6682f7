/*
 * migrations.h - the schema migrations compiled into the binary.
 *
 * The Makefile turns src/store/migrations/NNN_name.sql into
 * build/gen/migrations.c, one entry per file in file-name order (and
 * src/store/migrations/pg/ into fb_pg_migrations); NNN is the
 * schema version the file brings the database to.  Only store.c reads this.
 */
#ifndef FB_STORE_MIGRATIONS_H
#define FB_STORE_MIGRATIONS_H

#include <stddef.h>

typedef struct fb_migration {
    int version;      /* NNN of the file name: 1, 2, 3, ... */
    const char *name; /* "001_initial", for messages */
    const char *sql;  /* the file's text, NUL-terminated */
    size_t len;       /* strlen(sql) unless the file holds a NUL byte */
} fb_migration;

extern const fb_migration fb_migrations[];
extern const size_t fb_migrations_count;
/* The same versions for PostgreSQL, from src/store/migrations/pg/. */
extern const fb_migration fb_pg_migrations[];
extern const size_t fb_pg_migrations_count;

#endif
