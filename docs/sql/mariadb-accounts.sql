-- restic-orch's two MariaDB accounts (MariaDB 10.5 or newer; measured on 10.11). Run as root with the
-- mariadb client, the two passwords set first in the same session:
--   SET @backup_password = '...', @restore_password = '...';
-- Safe to run again: it sets the rights and the passwords exactly as below (anything else granted to the
-- two accounts is revoked) and grants `backup` EXECUTE on the stored functions that views call, so run it
-- again after adding an application's database.
DELIMITER //
BEGIN NOT ATOMIC
  IF COALESCE(@backup_password, '') = '' OR COALESCE(@restore_password, '') = '' THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'set both passwords first: SET @backup_password = ..., @restore_password = ...';
  END IF;

  -- backup: reads every database. SELECT (rows, and the accounts in the mysql database), SHOW VIEW (views),
  -- TRIGGER (without it mariadb-dump leaves the triggers out without an error), EVENT (events). It can
  -- write nothing: EXECUTE only on the stored functions that views call (mariadb-dump reads those views'
  -- columns through them), never on procedures.
  CREATE USER IF NOT EXISTS 'backup'@'127.0.0.1';
  EXECUTE IMMEDIATE CONCAT('ALTER USER ''backup''@''127.0.0.1'' IDENTIFIED BY ', QUOTE(@backup_password));
  REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'backup'@'127.0.0.1';
  GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.* TO 'backup'@'127.0.0.1';
  FOR f IN (SELECT DISTINCT r.ROUTINE_SCHEMA AS db, r.ROUTINE_NAME AS fn
              FROM information_schema.ROUTINES r JOIN information_schema.VIEWS v
                ON (v.TABLE_SCHEMA = r.ROUTINE_SCHEMA AND v.VIEW_DEFINITION LIKE CONCAT('%`', r.ROUTINE_NAME, '`(%'))
                OR v.VIEW_DEFINITION LIKE CONCAT('%`', r.ROUTINE_SCHEMA, '`.`', r.ROUTINE_NAME, '`(%')
             WHERE r.ROUTINE_TYPE = 'FUNCTION' AND r.ROUTINE_SCHEMA NOT IN ('sys', 'mysql')) DO
    EXECUTE IMMEDIATE CONCAT('GRANT EXECUTE ON FUNCTION `', REPLACE(f.db, '`', '``'), '`.`',
                             REPLACE(f.fn, '`', '``'), '` TO ''backup''@''127.0.0.1''');
  END FOR;

  -- restore: used by `restic-orch restore` and `drill` only. To load a dump: SELECT, INSERT, CREATE, DROP,
  -- ALTER, LOCK TABLES, CREATE VIEW, TRIGGER, EVENT, CREATE ROUTINE, ALTER ROUTINE, and SET USER to
  -- recreate views, triggers, routines and events with their original DEFINER. To restore the accounts:
  -- CREATE USER, and every privilege it gives back WITH GRANT OPTION (all database-level privileges, so
  -- that an application's GRANT ALL ON app.* comes back; global administrative ones stay with root).
  CREATE USER IF NOT EXISTS 'restore'@'127.0.0.1';
  EXECUTE IMMEDIATE CONCAT('ALTER USER ''restore''@''127.0.0.1'' IDENTIFIED BY ', QUOTE(@restore_password));
  REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'restore'@'127.0.0.1';
  GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, CREATE TEMPORARY TABLES,
        LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER,
        DELETE HISTORY, CREATE USER, SET USER ON *.* TO 'restore'@'127.0.0.1' WITH GRANT OPTION;
END //
DELIMITER ;
