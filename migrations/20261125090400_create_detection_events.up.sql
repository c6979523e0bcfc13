-- What a model detected in a test session, and how validation judged it: a true
-- positive matched to a ground-truth object, a false positive, or a false negative
-- (a ground-truth object the model missed). Deleting a ground-truth object keeps
-- the detections that matched it, unmatched.
CREATE TABLE detection_events (
    id                bigserial PRIMARY KEY,
    test_session_id   bigint NOT NULL REFERENCES test_sessions (id) ON DELETE CASCADE,
    video_id          bigint NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    frame_number      integer NOT NULL CHECK (frame_number >= 0),
    timestamp_seconds double precision NOT NULL CHECK (timestamp_seconds >= 0),
    class_label       varchar(100) NOT NULL,
    confidence        double precision NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    bbox_x            double precision NOT NULL CHECK (bbox_x >= 0),
    bbox_y            double precision NOT NULL CHECK (bbox_y >= 0),
    bbox_width        double precision NOT NULL CHECK (bbox_width >= 0),
    bbox_height       double precision NOT NULL CHECK (bbox_height >= 0),
    validation_result varchar(2) CHECK (validation_result IN ('TP', 'FP', 'FN')),
    ground_truth_id   bigint REFERENCES ground_truth_objects (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Per-session, per-class metrics; frame lookups; matches of a ground-truth object.
CREATE INDEX detection_events_session_class_idx ON detection_events (test_session_id, class_label, validation_result);
CREATE INDEX detection_events_video_frame_idx ON detection_events (video_id, frame_number);
CREATE INDEX detection_events_ground_truth_idx ON detection_events (ground_truth_id) WHERE ground_truth_id IS NOT NULL;
