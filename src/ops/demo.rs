//! `unidb demo`: a deterministic synthetic validation run of the AI
//! model-validation platform. Projects, videos, ground-truth objects, test sessions
//! and detection events are generated from a seed, written through unidb into a
//! configured database (a session with the SQL rewriting on SQLite, the pool on
//! PostgreSQL), and per-class precision, recall and F1 are computed there by one set
//! of SQL queries. Soft-deleted projects and videos, sessions that did not complete
//! and detections of ground truth marked `difficult` are left out, as the platform
//! does. The same seed gives the same tables on every backend, and the generator
//! knows the answer: [`Dataset::expected`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::ops::migrate::Progress;
use crate::ops::table;
use crate::ops::target::{literal, Target};
use crate::protocol::client::ClientError;
use crate::server::ServerState;

/// How much to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    pub seed: u64,
    pub projects: usize,
    pub videos_per_project: usize,
    pub frames_per_video: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 7,
            projects: 3,
            videos_per_project: 4,
            frames_per_video: 150,
        }
    }
}

/// Object classes the synthetic detector knows.
pub const CLASSES: [&str; 5] = ["bicycle", "car", "pedestrian", "traffic_light", "truck"];

/// How likely the synthetic detector finds an object of each class.
const RECALL: [f64; 5] = [0.72, 0.93, 0.81, 0.64, 0.88];

/// Names of generated projects start with this; a new run deletes them first.
pub const PREFIX: &str = "demo-";
/// The description every demo project carries; with the prefix, what marks a project
/// as the demo's own (and so replaceable by the next run).
pub const DEMO_DESCRIPTION: &str = "synthetic validation run (unidb demo)";

/// SplitMix64: a tiny generator whose sequence never changes between versions of
/// anything, so a seed means the same data forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A value in [lo, hi) rounded to `decimals`.
    fn range(&mut self, lo: f64, hi: f64, decimals: i32) -> f64 {
        let p = 10f64.powi(decimals);
        ((lo + self.unit() * (hi - lo)) * p).round() / p
    }
}

#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    pub camera_model: &'static str,
    pub camera_view: &'static str,
    pub signal_type: &'static str,
    pub deleted: bool,
}

#[derive(Debug, Clone)]
pub struct Video {
    pub project: usize,
    pub filename: String,
    pub fps: f64,
    pub frames: usize,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct BBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

#[derive(Debug, Clone)]
pub struct GroundTruth {
    pub video: usize,
    pub frame: usize,
    pub class: usize,
    pub bbox: BBox,
    pub difficult: bool,
    pub annotator: usize,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub video: usize,
    pub model_version: &'static str,
    pub completed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Tp,
    Fp,
    Fn,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Tp => "TP",
            Verdict::Fp => "FP",
            Verdict::Fn => "FN",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Detection {
    pub session: usize,
    pub frame: usize,
    pub class: usize,
    pub confidence: f64,
    pub bbox: BBox,
    pub verdict: Verdict,
    /// Index into `ground_truth`.
    pub ground_truth: Option<usize>,
}

/// A generated validation run.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub projects: Vec<Project>,
    pub videos: Vec<Video>,
    pub ground_truth: Vec<GroundTruth>,
    pub sessions: Vec<Session>,
    pub detections: Vec<Detection>,
}

/// Generates the run for `opts`: the same options give the same data.
pub fn generate(opts: &DemoOptions) -> Dataset {
    let mut rng = Rng(opts.seed);
    let models = ["rtx-4090", "imx390", "ar0233", "ov2311"];
    let views = ["front", "rear", "side", "cabin"];
    let signals = ["rgb", "infrared", "thermal"];
    let mut d = Dataset {
        projects: Vec::new(),
        videos: Vec::new(),
        ground_truth: Vec::new(),
        sessions: Vec::new(),
        detections: Vec::new(),
    };
    for p in 0..opts.projects {
        d.projects.push(Project {
            name: format!("{PREFIX}{:02}-{}", p + 1, views[p % views.len()]),
            camera_model: models[rng.below(models.len())],
            camera_view: views[p % views.len()],
            signal_type: signals[rng.below(signals.len())],
            // The last of several projects is soft-deleted: none of it counts.
            deleted: opts.projects > 1 && p == opts.projects - 1,
        });
        for v in 0..opts.videos_per_project {
            d.videos.push(Video {
                project: p,
                filename: format!("p{:02}_v{:02}.mp4", p + 1, v + 1),
                fps: [25.0, 30.0, 60.0][rng.below(3)],
                frames: opts.frames_per_video,
                // The second video of the first project is soft-deleted.
                deleted: p == 0 && v == 1,
            });
        }
    }
    for (vi, video) in d.videos.iter().enumerate() {
        for frame in 0..video.frames {
            for _ in 0..rng.below(3) {
                d.ground_truth.push(GroundTruth {
                    video: vi,
                    frame,
                    class: rng.below(CLASSES.len()),
                    bbox: BBox {
                        x: rng.range(0.0, 1800.0, 2),
                        y: rng.range(0.0, 1000.0, 2),
                        w: rng.range(8.0, 300.0, 2),
                        h: rng.range(8.0, 300.0, 2),
                    },
                    difficult: rng.unit() < 0.05,
                    annotator: rng.below(3) + 1,
                });
            }
        }
    }
    let mut gt_by_video: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, g) in d.ground_truth.iter().enumerate() {
        gt_by_video.entry(g.video).or_default().push(i);
    }
    for (vi, video) in d.videos.iter().enumerate() {
        // A completed session of the current model, and one of an older model that
        // failed part-way (its detections are not counted).
        for (version, completed) in [("2.1.0", true), ("1.4.2", false)] {
            let s = d.sessions.len();
            d.sessions.push(Session {
                video: vi,
                model_version: version,
                completed,
            });
            for &gi in gt_by_video.get(&vi).into_iter().flatten() {
                let g = &d.ground_truth[gi];
                let found = rng.unit() < RECALL[g.class];
                let jitter = |rng: &mut Rng, v: f64| (v + rng.range(-3.0, 3.0, 2)).max(0.0);
                let (verdict, confidence, bbox) = if found {
                    let b = BBox {
                        x: jitter(&mut rng, g.bbox.x),
                        y: jitter(&mut rng, g.bbox.y),
                        w: jitter(&mut rng, g.bbox.w),
                        h: jitter(&mut rng, g.bbox.h),
                    };
                    (Verdict::Tp, rng.range(0.5, 1.0, 3), b)
                } else {
                    (Verdict::Fn, 0.0, g.bbox)
                };
                d.detections.push(Detection {
                    session: s,
                    frame: g.frame,
                    class: g.class,
                    confidence,
                    bbox,
                    verdict,
                    ground_truth: Some(gi),
                });
            }
            for frame in 0..video.frames {
                if rng.unit() < 0.12 {
                    d.detections.push(Detection {
                        session: s,
                        frame,
                        class: rng.below(CLASSES.len()),
                        confidence: rng.range(0.3, 0.9, 3),
                        bbox: BBox {
                            x: rng.range(0.0, 1800.0, 2),
                            y: rng.range(0.0, 1000.0, 2),
                            w: rng.range(8.0, 300.0, 2),
                            h: rng.range(8.0, 300.0, 2),
                        },
                        verdict: Verdict::Fp,
                        ground_truth: None,
                    });
                }
            }
        }
    }
    d
}

/// Column names of the metrics table.
pub const COLUMNS: [&str; 7] = ["class_label", "tp", "fp", "fn", "precision", "recall", "f1"];

impl Dataset {
    /// Whether a detection counts: live project and video, completed session, not
    /// matched to a difficult object.
    fn counts(&self, det: &Detection) -> bool {
        let s = &self.sessions[det.session];
        let v = &self.videos[s.video];
        s.completed
            && !v.deleted
            && !self.projects[v.project].deleted
            && det
                .ground_truth
                .is_none_or(|g| !self.ground_truth[g].difficult)
    }

    /// The metrics table the SQL must produce (per class, then `all`), computed
    /// here from the generated data with exact integer rounding.
    pub fn expected(&self) -> Vec<Vec<String>> {
        let mut per: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
        for det in self.detections.iter().filter(|d| self.counts(d)) {
            let c = per.entry(CLASSES[det.class]).or_default();
            c[match det.verdict {
                Verdict::Tp => 0,
                Verdict::Fp => 1,
                Verdict::Fn => 2,
            }] += 1;
        }
        let mut total = [0u64; 3];
        let mut rows = Vec::new();
        for (class, c) in &per {
            for i in 0..3 {
                total[i] += c[i];
            }
            rows.push(metric_row(class, *c));
        }
        rows.push(metric_row("all", total));
        rows
    }
}

fn metric_row(label: &str, [tp, fp, fneg]: [u64; 3]) -> Vec<String> {
    vec![
        label.to_string(),
        tp.to_string(),
        fp.to_string(),
        fneg.to_string(),
        ratio4(tp, tp + fp),
        ratio4(tp, tp + fneg),
        ratio4(2 * tp, 2 * tp + fp + fneg),
    ]
}

/// `round(n::numeric / d, 4)` as PostgreSQL prints it; empty (NULL) when `d` is 0.
fn ratio4(n: u64, d: u64) -> String {
    if d == 0 {
        return String::new();
    }
    // Round half away from zero, in integers.
    let scaled = (n as u128 * 20_000 + d as u128) / (2 * d as u128);
    format!("{}.{:04}", scaled / 10_000, scaled % 10_000)
}

/// Per-class metrics of the demo projects: the query set the platform runs.
/// Ratios are computed in exact integer arithmetic, in basis points rounded half
/// away from zero, and printed with four decimals, so every engine prints the same
/// digits.
pub const METRICS_SQL: &str = "\
WITH scored AS (
    SELECT d.class_label, d.validation_result
    FROM detection_events d
    JOIN test_sessions s ON s.id = d.test_session_id
    JOIN videos v ON v.id = d.video_id
    JOIN projects p ON p.id = v.project_id
    LEFT JOIN ground_truth_objects g ON g.id = d.ground_truth_id
    WHERE s.status = 'completed'
      AND v.deleted_at IS NULL
      AND p.deleted_at IS NULL
      AND p.name LIKE 'demo-%'
      AND (g.id IS NULL OR g.difficult = false)
), counts AS (
    SELECT class_label,
           sum(CASE WHEN validation_result = 'TP' THEN 1 ELSE 0 END) AS tp,
           sum(CASE WHEN validation_result = 'FP' THEN 1 ELSE 0 END) AS fp,
           sum(CASE WHEN validation_result = 'FN' THEN 1 ELSE 0 END) AS fn
    FROM scored
    GROUP BY class_label
    UNION ALL
    SELECT 'all',
           sum(CASE WHEN validation_result = 'TP' THEN 1 ELSE 0 END),
           sum(CASE WHEN validation_result = 'FP' THEN 1 ELSE 0 END),
           sum(CASE WHEN validation_result = 'FN' THEN 1 ELSE 0 END)
    FROM scored
), ratios AS (
    SELECT class_label, tp, fp, fn,
           (20000 * tp + tp + fp) / NULLIF(2 * (tp + fp), 0) AS precision_bp,
           (20000 * tp + tp + fn) / NULLIF(2 * (tp + fn), 0) AS recall_bp,
           (40000 * tp + 2 * tp + fp + fn) / NULLIF(2 * (2 * tp + fp + fn), 0) AS f1_bp
    FROM counts
)
SELECT class_label, tp, fp, fn,
       (precision_bp / 10000) || '.' || lpad((precision_bp % 10000)::text, 4, '0') AS precision,
       (recall_bp / 10000) || '.' || lpad((recall_bp % 10000)::text, 4, '0') AS recall,
       (f1_bp / 10000) || '.' || lpad((f1_bp % 10000)::text, 4, '0') AS f1
FROM ratios
ORDER BY CASE WHEN class_label = 'all' THEN 1 ELSE 0 END, class_label";

/// What `demo` did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The metrics table as the database computed it.
    pub metrics: Vec<Vec<String>>,
    /// Whether it equals the generator's own answer.
    pub matches_expected: bool,
    pub summary: String,
}

impl DemoReport {
    pub fn render(&self) -> String {
        let mut out = self.summary.clone();
        out.push('\n');
        out.push_str(&table::render(&COLUMNS, &self.metrics));
        out
    }
}

/// Rows per INSERT statement.
const BATCH: usize = 500;

/// Replaces earlier demo data in `database` with a new run and computes the
/// metrics there.
pub async fn run(
    state: &Arc<ServerState>,
    database: &str,
    opts: &DemoOptions,
    out: &Progress,
) -> Result<DemoReport, String> {
    let data = generate(opts);
    let mut t = Target::through_unidb(state, database, "unidb-demo").await?;
    let r = run_on(&mut t, &data, out).await;
    if r.is_err() && t.in_transaction() {
        let _ = t.execute("ROLLBACK").await;
    }
    t.close().await;
    let metrics = r.map_err(|e| match e {
        ClientError::Server(s) if s.code == "42P01" => format!(
            "database {database}: {s}\nhint: the demo needs the platform's schema: run `unidb migrate up` first, or pass --migrate"
        ),
        e => format!("database {database}: {e}"),
    })?;
    let live_projects = data.projects.iter().filter(|p| !p.deleted).count();
    let live_videos = data
        .videos
        .iter()
        .filter(|v| !v.deleted && !data.projects[v.project].deleted)
        .count();
    let summary = format!(
        "seed {}: {} projects ({} live), {} videos ({} live), {} ground-truth objects, {} test sessions, {} detection events\n\
         per-class metrics over live projects and videos, completed sessions, difficult objects excluded:",
        opts.seed,
        data.projects.len(),
        live_projects,
        data.videos.len(),
        live_videos,
        data.ground_truth.len(),
        data.sessions.len(),
        data.detections.len(),
    );
    Ok(DemoReport {
        matches_expected: metrics == data.expected(),
        metrics,
        summary,
    })
}

async fn run_on(
    t: &mut Target,
    data: &Dataset,
    out: &Progress,
) -> Result<Vec<Vec<String>>, ClientError> {
    t.execute("BEGIN").await?;
    // Earlier demo runs go, with everything that hangs off them (ON DELETE CASCADE):
    // only projects the demo wrote (its name prefix and its description), never a
    // real project that happens to be called demo-something.
    t.execute(&format!(
        "DELETE FROM projects WHERE name LIKE {} AND description = {}",
        literal(&format!("{PREFIX}%")),
        literal(DEMO_DESCRIPTION)
    ))
    .await?;
    let project_ids = insert_returning(
        t,
        "INSERT INTO projects (name, description, camera_model, camera_view, signal_type, status, deleted_at) VALUES ",
        data.projects.iter().map(|p| {
            format!(
                "({}, {}, {}, {}, {}, 'active', {})",
                literal(&p.name),
                literal(DEMO_DESCRIPTION),
                literal(p.camera_model),
                literal(p.camera_view),
                literal(p.signal_type),
                deleted_at(p.deleted)
            )
        }),
    )
    .await?;
    let video_ids = insert_returning(
        t,
        "INSERT INTO videos (project_id, filename, file_path, duration_seconds, fps, resolution, status, deleted_at) VALUES ",
        data.videos.iter().map(|v| {
            format!(
                "({}, {}, {}, {}, {}, '1920x1080', 'ready', {})",
                project_ids[v.project],
                literal(&v.filename),
                literal(&format!("/data/demo/{}", v.filename)),
                v.frames as f64 / v.fps,
                v.fps,
                deleted_at(v.deleted)
            )
        }),
    )
    .await?;
    let gt_ids = insert_returning(
        t,
        "INSERT INTO ground_truth_objects (video_id, frame_number, timestamp_seconds, class_label, bbox_x, bbox_y, bbox_width, bbox_height, difficult, annotator, validated) VALUES ",
        data.ground_truth.iter().map(|g| {
            let fps = data.videos[g.video].fps;
            format!(
                "({}, {}, {}, '{}', {}, {}, {}, {}, {}, 'annotator-{}', true)",
                video_ids[g.video],
                g.frame,
                seconds(g.frame, fps),
                CLASSES[g.class],
                g.bbox.x,
                g.bbox.y,
                g.bbox.w,
                g.bbox.h,
                g.difficult,
                g.annotator
            )
        }),
    )
    .await?;
    let session_ids = insert_returning(
        t,
        "INSERT INTO test_sessions (project_id, video_id, name, model_name, model_version, status, started_at, completed_at, metrics) VALUES ",
        data.sessions.iter().map(|s| {
            let v = &data.videos[s.video];
            let (status, completed) = if s.completed {
                ("completed", "'2026-01-01 01:00:00+00'")
            } else {
                ("failed", "NULL")
            };
            format!(
                "({}, {}, {}, 'detector', '{}', '{status}', '2026-01-01 00:00:00+00', {completed}, {})",
                project_ids[v.project],
                video_ids[s.video],
                literal(&format!("{} with detector {}", v.filename, s.model_version)),
                s.model_version,
                literal(&format!("{{\"frames\": {}, \"synthetic\": true}}", v.frames)),
            )
        }),
    )
    .await?;
    let mut sent = 0;
    for chunk in data.detections.chunks(BATCH) {
        let mut sql = String::from(
            "INSERT INTO detection_events (test_session_id, video_id, frame_number, timestamp_seconds, class_label, confidence, bbox_x, bbox_y, bbox_width, bbox_height, validation_result, ground_truth_id) VALUES ",
        );
        for (i, d) in chunk.iter().enumerate() {
            let s = &data.sessions[d.session];
            let fps = data.videos[s.video].fps;
            if i > 0 {
                sql.push_str(", ");
            }
            let _ = write!(
                sql,
                "({}, {}, {}, {}, '{}', {}, {}, {}, {}, {}, '{}', {})",
                session_ids[d.session],
                video_ids[s.video],
                d.frame,
                seconds(d.frame, fps),
                CLASSES[d.class],
                d.confidence,
                d.bbox.x,
                d.bbox.y,
                d.bbox.w,
                d.bbox.h,
                d.verdict.as_str(),
                d.ground_truth
                    .map_or("NULL".to_string(), |g| gt_ids[g].to_string())
            );
        }
        t.execute(&sql).await?;
        sent += chunk.len();
    }
    t.execute("COMMIT").await?;
    out(&format!(
        "wrote {} projects, {} videos, {} ground-truth objects, {} test sessions, {sent} detection events",
        project_ids.len(),
        video_ids.len(),
        gt_ids.len(),
        session_ids.len()
    ));
    let rows = t.rows(METRICS_SQL).await?;
    Ok(rows
        .into_iter()
        .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
        .collect())
}

fn deleted_at(deleted: bool) -> &'static str {
    if deleted {
        "'2026-01-02 00:00:00+00'"
    } else {
        "NULL"
    }
}

/// A frame's time, in whole milliseconds (exact in both engines).
fn seconds(frame: usize, fps: f64) -> f64 {
    (frame as f64 / fps * 1000.0).round() / 1000.0
}

/// Inserts `values` in batches with `RETURNING id`; returns the ids in order.
async fn insert_returning(
    t: &mut Target,
    head: &str,
    values: impl Iterator<Item = String>,
) -> Result<Vec<i64>, ClientError> {
    let values: Vec<String> = values.collect();
    let mut ids = Vec::with_capacity(values.len());
    for chunk in values.chunks(BATCH) {
        let sql = format!("{head}{} RETURNING id", chunk.join(", "));
        for row in t.rows(&sql).await? {
            let id = row
                .first()
                .cloned()
                .flatten()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ClientError::Protocol("INSERT … RETURNING id gave no id".into()))?;
            ids.push(id);
        }
    }
    if ids.len() != values.len() {
        return Err(ClientError::Protocol(format!(
            "INSERT … RETURNING gave {} ids for {} rows",
            ids.len(),
            values.len()
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let opts = DemoOptions {
            seed: 42,
            projects: 2,
            videos_per_project: 2,
            frames_per_video: 40,
        };
        let a = generate(&opts);
        let b = generate(&opts);
        assert_eq!(a.expected(), b.expected());
        assert_eq!(a.detections.len(), b.detections.len());
        let c = generate(&DemoOptions { seed: 43, ..opts });
        assert_ne!(a.expected(), c.expected());
        // The soft-deleted project and video exist, and their data does not count.
        assert!(a.projects[1].deleted && a.videos[1].deleted);
        let counted = a.detections.iter().filter(|d| a.counts(d)).count() as u64;
        let all = a.expected().last().unwrap().clone();
        let sum: u64 = all[1..4].iter().map(|v| v.parse::<u64>().unwrap()).sum();
        assert_eq!(sum, counted);
        assert!(counted < a.detections.len() as u64 / 2);
    }

    #[test]
    fn ratios_round_half_away_from_zero_like_numeric() {
        assert_eq!(ratio4(1, 3), "0.3333");
        assert_eq!(ratio4(2, 3), "0.6667");
        assert_eq!(ratio4(1, 8), "0.1250");
        assert_eq!(ratio4(1, 16000), "0.0001"); // 0.0000625 rounds up
        assert_eq!(ratio4(5, 5), "1.0000");
        assert_eq!(ratio4(0, 5), "0.0000");
        assert_eq!(ratio4(0, 0), "");
    }
}
