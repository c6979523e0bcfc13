-- Camera projects of the validation platform. Rows are soft-deleted: `deleted_at`
-- is set instead of deleting, and every query of live data filters on it.
CREATE TABLE projects (
    id           bigserial PRIMARY KEY,
    name         varchar(200) NOT NULL,
    description  text,
    camera_model varchar(100),
    camera_view  varchar(50),
    signal_type  varchar(50),
    status       varchar(20) NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'paused', 'completed', 'archived')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);

-- A name is unique among live projects; a deleted project frees its name.
CREATE UNIQUE INDEX projects_name_live_key ON projects (name) WHERE deleted_at IS NULL;
CREATE INDEX projects_status_live_idx ON projects (status) WHERE deleted_at IS NULL;
