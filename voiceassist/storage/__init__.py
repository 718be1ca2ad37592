"""Where calls and turns are kept: the schema and its migrations, the SQL store (SQLite, MariaDB,
PostgreSQL; FreePBX's credentials), the spool that holds turns while the database is away, the
journal that writes to one or the other, redaction of personal data, and retention."""
