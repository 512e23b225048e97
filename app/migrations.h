/*
 * migrations.h - the schema migrations compiled in from sql/NNN_*.sql and
 * sql/postgresql/NNN_*.sql.
 */
#ifndef AIGW_MIGRATIONS_H
#define AIGW_MIGRATIONS_H

struct migration {
    int version;
    const char *name;
    const char *sql;
};

extern const struct migration migrations[];
extern const int n_migrations;
/* sql/reports.sql: the reporting views, recreated whenever their text changes. */
extern const char reports_sql[];
/* The same for PostgreSQL, from sql/postgresql/. */
extern const struct migration pg_migrations[];
extern const int n_pg_migrations;
extern const char pg_reports_sql[];

#endif
