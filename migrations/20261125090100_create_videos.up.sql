-- Videos uploaded to a project. Deleting a project removes its videos (and, through
-- their own foreign keys, everything recorded about them).
CREATE TABLE videos (
    id               bigserial PRIMARY KEY,
    project_id       bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    filename         varchar(255) NOT NULL,
    file_path        text NOT NULL,
    duration_seconds double precision CHECK (duration_seconds >= 0),
    fps              double precision CHECK (fps > 0),
    resolution       varchar(20),
    status           varchar(20) NOT NULL DEFAULT 'uploaded'
                     CHECK (status IN ('uploaded', 'processing', 'ready', 'failed')),
    uploaded_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);

CREATE INDEX videos_project_live_idx ON videos (project_id) WHERE deleted_at IS NULL;
CREATE INDEX videos_status_live_idx ON videos (status) WHERE deleted_at IS NULL;
