//! Training curves: `curves.svg` of a run directory, drawn from its `metrics.csv`.
//!
//! One figure of small multiples, two panels to a row, one panel per quantity, each with its
//! own y axis (a loss of 20 and a learning rate of 0.001 share no useful scale): the loss and
//! the classification accuracy (train and valid rows), the verification accuracy at each
//! epoch's end (the held-out identities and every `val=` target, valid rows) and the learning
//! rate, all against the epoch. A column the
//! file lacks, or that holds no value, leaves its panel out, so files of older runs or runs
//! without held-out pairs still draw what they have.
//!
//! The csv is read defensively: a file that cannot be read or parsed is an error naming the
//! file and the line, never a panic.

use std::path::Path;

use crate::protocol::plot::{Axis, Legend, LinePlot, Panels, Series};
use crate::util::fs::write_atomically;

/// A run's `metrics.csv`: one row per epoch and split (`train`, `valid`), one value per
/// metric column; an empty cell (a metric the split does not log) is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsTable {
    /// The metric columns, after `epoch` and `split`.
    pub columns: Vec<String>,
    /// The rows in file order.
    pub rows: Vec<MetricsRow>,
}

/// One row of [`MetricsTable`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    /// The epoch, from 1.
    pub epoch: usize,
    /// `train` or `valid`.
    pub split: String,
    /// One value per [`MetricsTable::columns`] entry.
    pub values: Vec<Option<f64>>,
}

impl MetricsTable {
    /// Reads and parses `path` ([`MetricsTable::parse`]).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `metrics.csv`; errors name `source` and the 1-based line. The
    /// header must have `epoch` and `split` columns (anywhere), every row as many cells as
    /// the header, an epoch that is a whole number and values that are numbers or empty.
    /// Blank lines are skipped.
    pub fn parse(text: &str, source: &Path) -> Result<Self, String> {
        let at = |line: usize, what: String| format!("{}:{line}: {what}", source.display());
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        let Some((_, header)) = lines.by_ref().find(|(_, l)| !l.trim().is_empty()) else {
            return Err(format!("{}: empty, expected a header line", source.display()));
        };
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let header_line = text.lines().position(|l| !l.trim().is_empty()).unwrap_or(0) + 1;
        let position = |name: &str| {
            names.iter().position(|n| *n == name).ok_or_else(|| {
                at(header_line, format!("the header has no `{name}` column: {header}"))
            })
        };
        let (epoch_at, split_at) = (position("epoch")?, position("split")?);
        let metric_at: Vec<usize> =
            (0..names.len()).filter(|&i| i != epoch_at && i != split_at).collect();
        let columns = metric_at.iter().map(|&i| names[i].to_string()).collect();
        let mut rows = Vec::new();
        for (n, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != names.len() {
                let (want, got) = (names.len(), cells.len());
                return Err(at(n, format!("expected {want} cells as in the header, found {got}")));
            }
            let epoch = cells[epoch_at]
                .parse::<usize>()
                .map_err(|_| at(n, format!("epoch `{}` is not a whole number", cells[epoch_at])))?;
            let values = metric_at
                .iter()
                .map(|&i| match cells[i] {
                    "" => Ok(None),
                    cell => cell
                        .parse::<f64>()
                        .map(Some)
                        .map_err(|_| at(n, format!("{} `{cell}` is not a number", names[i]))),
                })
                .collect::<Result<_, _>>()?;
            rows.push(MetricsRow { epoch, split: cells[split_at].to_string(), values });
        }
        Ok(Self { columns, rows })
    }

    /// `(epoch, value)` of `column` in the rows of `split`, by epoch; empty when the column is
    /// missing or holds no value for that split.
    pub fn series(&self, split: &str, column: &str) -> Vec<(f64, f64)> {
        let Some(c) = self.columns.iter().position(|name| name == column) else {
            return Vec::new();
        };
        let mut points: Vec<(f64, f64)> = self
            .rows
            .iter()
            .filter(|r| r.split == split)
            .filter_map(|r| Some((r.epoch as f64, r.values[c]?)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    }

    /// The splits in order of first appearance.
    fn splits(&self) -> Vec<&str> {
        let mut splits: Vec<&str> = Vec::new();
        for row in &self.rows {
            if !splits.contains(&row.split.as_str()) {
                splits.push(&row.split);
            }
        }
        splits
    }
}

/// Which columns a panel draws.
#[derive(Debug, Clone, Copy)]
enum Columns {
    /// The column of this name.
    Exact(&'static str),
    /// The verification columns (`verification_*`) but the running bests, on the valid rows
    /// only (the end-of-epoch measurements), each line named after its set.
    Verification,
}

/// One panel of `curves.svg`: its title, y label, columns and legend corner.
struct PanelSpec {
    title: &'static str,
    y_label: &'static str,
    columns: Columns,
    legend: Legend,
}

/// The panels of `curves.svg`, in reading order (two to a row).
const PANELS: [PanelSpec; 4] = [
    PanelSpec {
        title: "Loss",
        y_label: "loss (epoch mean)",
        columns: Columns::Exact("loss"),
        legend: Legend::TopRight,
    },
    PanelSpec {
        title: "Classification accuracy",
        y_label: "accuracy (epoch mean)",
        columns: Columns::Exact("accuracy"),
        legend: Legend::BottomRight,
    },
    PanelSpec {
        title: "Verification accuracy",
        y_label: "accuracy (10-fold)",
        columns: Columns::Verification,
        legend: Legend::BottomRight,
    },
    PanelSpec {
        title: "Learning rate",
        y_label: "learning rate (epoch mean)",
        columns: Columns::Exact("learning_rate"),
        legend: Legend::TopRight,
    },
];

/// More points than this draw a bare line: markers would merge into a band.
const MARKERS_UP_TO: usize = 50;

/// The training curves of `table`, one panel per quantity that has values; `None` when no
/// panel has any.
pub fn training_curves(table: &MetricsTable, title: &str) -> Option<Panels> {
    let mut panels = Panels::new(title, 2);
    for spec in &PANELS {
        let columns: Vec<&str> = table
            .columns
            .iter()
            .map(String::as_str)
            .filter(|c| match spec.columns {
                Columns::Exact(name) => *c == name,
                Columns::Verification => c.starts_with("verification") && !c.ends_with("_best"),
            })
            .collect();
        let mut plot = LinePlot::new(
            spec.title,
            Axis::linear("epoch").whole_ticks(),
            Axis::linear(spec.y_label),
        )
        .with_legend(spec.legend)
        .with_size(480, 320);
        for column in &columns {
            for split in table.splits() {
                let verification = matches!(spec.columns, Columns::Verification);
                let points = table.series(split, column);
                if points.is_empty() || (verification && split != "valid") {
                    continue;
                }
                let name = match (verification, columns.len()) {
                    (true, _) => match column.strip_prefix("verification_") {
                        Some("accuracy") | None => "held-out identities".to_string(),
                        Some(set) => set.to_string(),
                    },
                    (false, 1) => split.to_string(),
                    (false, _) => format!("{split} {column}"),
                };
                let markers = points.len() <= MARKERS_UP_TO;
                let series = Series::new(name, points);
                plot.add(if markers { series.with_markers() } else { series });
            }
        }
        // One line needs no legend: the panel's title names it.
        if plot.series.len() == 1 {
            plot = plot.with_legend(Legend::Hidden);
        }
        if !plot.series.is_empty() {
            panels.add(plot);
        }
    }
    (!panels.plots.is_empty()).then_some(panels)
}

/// Draws `dir/curves.svg` from `dir/metrics.csv` ([`training_curves`]); returns whether it
/// wrote one (a csv without any of the plotted columns gives none). Errors name the file, and
/// the line when the csv is malformed.
pub fn write_training_curves(dir: &Path) -> Result<bool, String> {
    let table = MetricsTable::read(&dir.join("metrics.csv"))?;
    let title = match dir.file_name() {
        Some(name) => format!("Training curves of {}", name.to_string_lossy()),
        None => "Training curves".to_string(),
    };
    let Some(panels) = training_curves(&table, &title) else {
        return Ok(false);
    };
    write_atomically(&dir.join("curves.svg"), panels.to_svg().as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_util::temp_dir;

    /// The columns `run_dir::write_metrics_csv` writes, two epochs: the train rows log no
    /// verification, the valid rows no learning rate or group usage.
    const CSV: &str = "\
epoch,split,loss,accuracy,l1_margin_softmax_,l2_self-grouping_,largest_group_share,group_entropy_bits_,largest_label_share,label_entropy_bits_,group_confidence,learning_rate,verification_accuracy
1,train,20.5,0.125,20,0.5,0.5,1.5,0.5,1.5,0.9,0.05,
2,train,12.25,0.5,12,0.25,0.25,2,0.25,2,0.8,0.025,
1,valid,18,0.25,17.5,0.5,,,,,0.9,,0.625
2,valid,10,0.75,9.5,0.5,,,,,0.8,,0.875
";

    #[test]
    fn metrics_csv_gives_one_panel_per_quantity_with_its_points() {
        let table = MetricsTable::parse(CSV, Path::new("run/metrics.csv")).unwrap();
        assert_eq!(table.columns.len(), 11);
        assert_eq!(table.rows.len(), 4);
        let panels = training_curves(&table, "t").unwrap();
        let titles: Vec<&str> = panels.plots.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            ["Loss", "Classification accuracy", "Verification accuracy", "Learning rate"]
        );
        let points =
            |panel: usize, series: usize| panels.plots[panel].series[series].points.clone();
        let names = |panel: usize| -> Vec<String> {
            panels.plots[panel].series.iter().map(|s| s.name.clone()).collect()
        };
        assert_eq!(names(0), ["train", "valid"]);
        assert_eq!(points(0, 0), [(1.0, 20.5), (2.0, 12.25)]);
        assert_eq!(points(0, 1), [(1.0, 18.0), (2.0, 10.0)]);
        assert_eq!(points(1, 0), [(1.0, 0.125), (2.0, 0.5)]);
        assert_eq!(points(1, 1), [(1.0, 0.25), (2.0, 0.75)]);
        // The train rows have no verification and the valid rows no learning rate: one line
        // each, no legend.
        assert_eq!(names(2), ["held-out identities"]);
        assert_eq!(points(2, 0), [(1.0, 0.625), (2.0, 0.875)]);
        assert_eq!(names(3), ["train"]);
        assert_eq!(points(3, 0), [(1.0, 0.05), (2.0, 0.025)]);
        assert_eq!(panels.plots[3].legend, Legend::Hidden);

        // Two panels to a row of 480 x 320 under a 36 px title band: 960 x 676.
        let svg = panels.to_svg();
        assert!(
            svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="960" height="676""#)
        );
        assert!(svg.contains(r#"<g transform="translate(480 356)">"#), "4th panel, 2nd row");
        assert_eq!(svg.matches("<clipPath id=\"plot-area-").count(), 4);
        // Epoch ticks are whole numbers although the range is 1..2.
        assert!(svg.contains(">1</text>") && svg.contains(">2</text>"));
        assert!(!svg.contains(">1.2</text>") && !svg.contains("NaN"));
    }

    #[test]
    fn missing_columns_leave_their_panels_out() {
        // An older file: no verification, no learning rate; rows out of epoch order and a
        // blank line, CRLF line ends.
        let csv = "split,epoch,loss\r\n\r\ntrain,2,1.5\r\ntrain,1,3\r\n";
        let table = MetricsTable::parse(csv, Path::new("m.csv")).unwrap();
        let panels = training_curves(&table, "t").unwrap();
        assert_eq!(panels.plots.len(), 1);
        assert_eq!(panels.plots[0].series[0].points, [(1.0, 3.0), (2.0, 1.5)]);
        // Nothing plottable: no figure.
        let table = MetricsTable::parse("epoch,split,other\n1,train,3\n", Path::new("m")).unwrap();
        assert!(training_curves(&table, "t").is_none());
        // Several verification columns (`val=` targets): one line each, named by its set, from
        // the valid rows; the running bests and the train rows' val_every means are left out.
        let csv = "epoch,split,verification_accuracy,verification_lfw,verification_lfw_best\n\
                   1,train,,0.2,0.3\n1,valid,0.5,0.25,0.3\n";
        let table = MetricsTable::parse(csv, Path::new("m")).unwrap();
        let panels = training_curves(&table, "t").unwrap();
        let names: Vec<&str> = panels.plots[0].series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["held-out identities", "lfw"]);
        assert_eq!(panels.plots[0].series[1].points, [(1.0, 0.25)]);
    }

    #[test]
    fn malformed_metrics_csv_names_the_file_and_line() {
        let err = |text: &str| MetricsTable::parse(text, Path::new("run/metrics.csv")).unwrap_err();
        let e = err("epoch,split,loss\n1,train,2\n2,train\n");
        assert!(
            e.starts_with("run/metrics.csv:3: expected 3 cells as in the header, found 2"),
            "{e}"
        );
        let e = err("epoch,split,loss\n1,train,2\n\n1.5,train,2\n");
        assert!(e.starts_with("run/metrics.csv:4: epoch `1.5` is not a whole number"), "{e}");
        let e = err("epoch,split,loss\n1,train,two\n");
        assert!(e.starts_with("run/metrics.csv:2: loss `two` is not a number"), "{e}");
        let e = err("\nsplit,loss\n1,2\n");
        assert!(e.starts_with("run/metrics.csv:2: the header has no `epoch` column"), "{e}");
        assert!(err("").contains("run/metrics.csv: empty"));

        // Through the file: the run directory's path in the error, and no curves.svg.
        let dir = temp_dir("curves-malformed");
        std::fs::write(dir.join("metrics.csv"), "epoch,split,loss\n1,train,x\n").unwrap();
        let e = write_training_curves(&dir).unwrap_err();
        assert!(e.contains(&dir.join("metrics.csv").display().to_string()) && e.contains(":2:"));
        assert!(!dir.join("curves.svg").exists());
        std::fs::remove_file(dir.join("metrics.csv")).unwrap();
        assert!(write_training_curves(&dir).unwrap_err().starts_with("cannot read"));
        std::fs::write(dir.join("metrics.csv"), CSV).unwrap();
        assert!(write_training_curves(&dir).unwrap());
        let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy();
        assert!(svg.contains(&format!(">Training curves of {name}</text>")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
