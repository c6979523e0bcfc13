-- One check for psql_client.sql, included with \ir after setting
--   :name  what is checked        :want  the expected text        :got  the actual text
-- The comparison runs on the server; a mismatch prints FAIL and then runs a statement
-- that must fail (no such relation), which stops the script (ON_ERROR_STOP) with exit 3.
\if :{?got}
\else
  \set got '(unset: NULL or no row)'
\endif
SELECT :'got' = :'want' AS check_ok \gset
\if :check_ok
  \echo 'ok -' :name
\else
  \set fail_message 'FAIL - ' :name ': expected ' :'want' ', got ' :'got'
  \warn :fail_message
  \set VERBOSITY terse
  SELECT * FROM "check failed, see the FAIL line above";
\endif
\unset got
