//! Tables printed for people, aligned as psql prints them.

/// Renders `rows` under `columns`, psql's aligned format without the row count.
/// Numbers are right-aligned, everything else left-aligned.
pub fn render(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(v.chars().count());
            }
        }
    }
    let numeric: Vec<bool> = (0..columns.len())
        .map(|i| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(i)
                        .is_some_and(|v| v.is_empty() || v.parse::<f64>().is_ok())
                })
        })
        .collect();
    let mut out = String::new();
    let cell = |out: &mut String, text: &str, width: usize, right: bool| {
        let pad = width.saturating_sub(text.chars().count());
        if right {
            out.push_str(&" ".repeat(pad));
            out.push_str(text);
        } else {
            out.push_str(text);
            out.push_str(&" ".repeat(pad));
        }
    };
    for (i, c) in columns.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { " | " });
        let w = widths[i];
        let left = (w - c.chars().count()) / 2;
        out.push_str(&" ".repeat(left));
        cell(&mut out, c, w - left, false);
    }
    out = out.trim_end().to_string();
    out.push('\n');
    for (i, w) in widths.iter().enumerate() {
        out.push_str(if i == 0 { "-" } else { "-+-" });
        out.push_str(&"-".repeat(*w));
    }
    out.push_str("-\n");
    for row in rows {
        let mut line = String::new();
        for (i, w) in widths.iter().enumerate() {
            line.push_str(if i == 0 { " " } else { " | " });
            cell(
                &mut line,
                row.get(i).map_or("", String::as_str),
                *w,
                numeric[i],
            );
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligned_like_psql() {
        let t = super::render(
            &["class", "tp", "precision"],
            &[
                vec!["car".into(), "12".into(), "0.8571".into()],
                vec!["pedestrian".into(), "3".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "   class    | tp | precision\n\
             ------------+----+-----------\n \
             car        | 12 |    0.8571\n \
             pedestrian |  3 |\n"
        );
    }
}
