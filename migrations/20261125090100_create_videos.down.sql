DROP INDEX videos_status_live_idx;
DROP INDEX videos_project_live_idx;
DROP TABLE videos;
