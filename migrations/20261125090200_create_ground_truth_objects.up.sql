-- Annotated objects of a video frame: what a model should detect.
CREATE TABLE ground_truth_objects (
    id                bigserial PRIMARY KEY,
    video_id          bigint NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    frame_number      integer NOT NULL CHECK (frame_number >= 0),
    timestamp_seconds double precision NOT NULL CHECK (timestamp_seconds >= 0),
    class_label       varchar(100) NOT NULL,
    bbox_x            double precision NOT NULL CHECK (bbox_x >= 0),
    bbox_y            double precision NOT NULL CHECK (bbox_y >= 0),
    bbox_width        double precision NOT NULL CHECK (bbox_width >= 0),
    bbox_height       double precision NOT NULL CHECK (bbox_height >= 0),
    difficult         boolean NOT NULL DEFAULT false,
    annotator         varchar(100),
    validated         boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ground_truth_objects_video_frame_idx ON ground_truth_objects (video_id, frame_number);
CREATE INDEX ground_truth_objects_class_idx ON ground_truth_objects (class_label);
