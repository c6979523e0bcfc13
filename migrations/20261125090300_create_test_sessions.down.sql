DROP INDEX test_sessions_video_idx;
DROP INDEX test_sessions_project_status_idx;
DROP TABLE test_sessions;
