-- One run of a model over a video; `metrics` holds the model's own summary.
CREATE TABLE test_sessions (
    id            bigserial PRIMARY KEY,
    project_id    bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    video_id      bigint NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    name          varchar(200) NOT NULL,
    model_name    varchar(100) NOT NULL,
    model_version varchar(50) NOT NULL,
    status        varchar(20) NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    started_at    timestamptz,
    completed_at  timestamptz,
    metrics       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (completed_at IS NULL OR started_at IS NOT NULL)
);

CREATE INDEX test_sessions_project_status_idx ON test_sessions (project_id, status);
CREATE INDEX test_sessions_video_idx ON test_sessions (video_id);
