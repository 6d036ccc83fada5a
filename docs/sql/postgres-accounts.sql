-- restic-orch's two PostgreSQL accounts (PostgreSQL 14 or newer; measured on 15). Run as a superuser:
--   psql -v ON_ERROR_STOP=1 -v backup_password='...' -v restore_password='...' -f postgres-accounts.sql
-- Safe to run again: it re-applies the attributes and the passwords, and makes `restore` a member of
-- every role that owns something, so run it again after adding an application's role.
SELECT :{?backup_password} AND :{?restore_password} AS passwords_set \gset
\if :passwords_set
\else
  DO $$ BEGIN RAISE EXCEPTION 'set both passwords: psql -v backup_password=... -v restore_password=...'; END $$;
\endif

-- backup: reads every row of every database (pg_read_all_data, which also covers pg_authid, so the roles
-- are dumped with their password hashes); BYPASSRLS so that tables with row-level security are dumped
-- whole. It can write nothing.
SELECT 'CREATE ROLE backup' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'backup') \gexec
ALTER ROLE backup WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS
  PASSWORD :'backup_password';
GRANT pg_read_all_data TO backup;

-- restore: used by `restic-orch restore` and `drill` only. CREATEDB to create the databases it restores
-- (and the drill's drill_* copies), CREATEROLE to restore the roles, and membership in every role that
-- owns a database or an object, so that a restore gives each object back to its owner.
SELECT 'CREATE ROLE restore' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'restore') \gexec
ALTER ROLE restore WITH LOGIN NOSUPERUSER CREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'restore_password';
SELECT format('GRANT %I TO restore', r.rolname)
  FROM pg_roles r
 WHERE NOT r.rolsuper AND r.rolname NOT IN ('backup', 'restore')
   AND r.oid IN (SELECT refobjid FROM pg_shdepend WHERE deptype = 'o' AND refclassid = 'pg_authid'::regclass)
 ORDER BY r.rolname \gexec
