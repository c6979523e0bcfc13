DROP INDEX projects_status_live_idx;
DROP INDEX projects_name_live_key;
DROP TABLE projects;
