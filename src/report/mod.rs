//! A picture of every run: [`write_report`] reads an artifact directory — burn-train's metric
//! logs, `routing.csv`, the guard's alarms — and draws the run as PNGs with one `report.html`
//! that embeds them beside a short text: the best epoch, the final values, the alarms that fired
//! and advice for each problem it sees (collapse, dead experts, drops at the eval capacity, a
//! growing train/valid gap, a non-finite loss).
//!
//! Figures (in `report/` beside `report.html`):
//! - `loss.png`: training loss per step (means over buckets of steps) and validation loss per
//!   epoch, alarms marked where they fired;
//! - `routing_layer<L>.png` per sparse layer: heatmaps of each expert's token fraction per epoch
//!   (train and valid, from `routing.csv`; colour = load E·f, 1 is balanced);
//! - `bias_layer<L>.png`: the aux-loss-free selection bias per expert, where it is on;
//! - `drops.png`, `entropy.png`, `z_loss.png`, `load.png`: dropped and skipped fractions, router
//!   entropy (ln E = undecided), z-loss and max expert load over the run (with the collapse
//!   threshold and the alarms).
//!
//! It works on a finished run and on one that is still training or was interrupted (it draws
//! what the files hold).

pub mod plot;
mod read;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use read::{LoggedAlarm, RoutingRow, RunRecord, STEP_METRICS, read_routing_csv};

use crate::error::{Error, Result};
use crate::routing_stats::{collapse_load, dead_in, max_load};
use crate::train::human::thousands;
use plot::{Marker, Panel, Series};

/// Something a report flags, with what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The loss (or one of its terms) went NaN or infinite and stopped the run.
    NonFinite {
        /// The guard's alarm text.
        alarm: String,
    },
    /// A sparse layer's max expert load in the last epoch reached the collapse threshold.
    Collapse {
        /// The sparse layer's position in the encoder.
        layer: usize,
        /// E · max fᵢ over the last epoch (training).
        load: f64,
        /// The threshold, 1 + (E − 1)/2 unless the run set its own.
        threshold: f64,
    },
    /// Experts that got less than 1% of their fair share of the last epoch's training tokens.
    DeadExperts {
        /// The sparse layer's position in the encoder.
        layer: usize,
        /// The dead experts.
        experts: Vec<usize>,
    },
    /// Tokens dropped at the eval capacity factor in the last validation.
    EvalDrops {
        /// The dropped share of assignments.
        fraction: f64,
        /// The run's eval capacity factor.
        eval_capacity_factor: f64,
    },
    /// The validation loss rose after its best epoch while the training loss kept falling.
    Overfitting {
        /// The best validation epoch.
        best_epoch: usize,
        /// Its validation loss.
        best: f64,
        /// The last epoch's validation loss.
        last: f64,
    },
}

/// The advice for a [`Finding`]; the README's section "Reading a run's report" says the same.
pub mod advice {
    /// For [`super::Finding::NonFinite`].
    pub const NON_FINITE: &str = "Resume from the last good checkpoint with a lower learning \
        rate (`lr`), and keep the router z-loss on (`z_coef` 0.001): it keeps router logits small.";
    /// For [`super::Finding::Collapse`] and [`super::Finding::DeadExperts`].
    pub const COLLAPSE: &str = "Balance the router: raise the load-balancing weight (`aux_coef`, \
        e.g. 0.01 → 0.05), or add aux-loss-free balancing (`expert_bias_rate` 1e-3); a lower \
        learning rate also helps. With data from several domains, mix the domains within every \
        batch: capacity is shared per batch.";
    /// For [`super::Finding::EvalDrops`].
    pub const EVAL_DROPS: &str = "Raise the eval capacity factor (`eval_capacity_factor`, e.g. \
        2.0 → 4.0) so that validation measures the model rather than its capacity; sampling \
        (`generate`) runs dropless and never drops a token.";
    /// For [`super::Finding::Overfitting`].
    pub const OVERFITTING: &str = "The model over-fits: add dropout (`dropout`, and \
        `expert_dropout` 0.4 as in the Switch paper's Table 4), use fewer experts or more data, \
        or stop early (`patience`) — the best epoch's weights are then kept.";
}

impl Finding {
    /// One line saying what was seen.
    pub fn headline(&self) -> String {
        match self {
            Self::NonFinite { alarm } => format!("the run stopped: {alarm}"),
            Self::Collapse {
                layer,
                load,
                threshold,
            } => format!(
                "layer {layer}: max expert load {load:.2} in the last epoch, at or above the \
                 collapse threshold {threshold:.2}"
            ),
            Self::DeadExperts { layer, experts } => format!(
                "layer {layer}: expert{} {} received < 1% of a fair share in the last epoch",
                if experts.len() == 1 { "" } else { "s" },
                experts
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::EvalDrops {
                fraction,
                eval_capacity_factor,
            } => format!(
                "{:.1}% of the token assignments were dropped in the last validation (eval \
                 capacity factor {eval_capacity_factor})",
                100.0 * fraction
            ),
            Self::Overfitting {
                best_epoch,
                best,
                last,
            } => format!(
                "validation loss rose from {best:.4} at epoch {best_epoch} to {last:.4} while the \
                 training loss kept falling"
            ),
        }
    }

    /// What to do.
    pub fn advice(&self) -> &'static str {
        match self {
            Self::NonFinite { .. } => advice::NON_FINITE,
            Self::Collapse { .. } | Self::DeadExperts { .. } => advice::COLLAPSE,
            Self::EvalDrops { .. } => advice::EVAL_DROPS,
            Self::Overfitting { .. } => advice::OVERFITTING,
        }
    }
}

/// Above this share of dropped assignments in validation, a report flags [`Finding::EvalDrops`].
pub const EVAL_DROPS_FLAGGED: f64 = 0.01;

/// What [`write_report`] wrote and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// `report.html`.
    pub html: PathBuf,
    /// The PNGs, in the page's order.
    pub figures: Vec<PathBuf>,
    /// The problems it flagged.
    pub findings: Vec<Finding>,
    /// The epoch of lowest validation loss and that loss, if a validation ran.
    pub best: Option<(usize, f64)>,
}

/// Reads the run in `artifact_dir` and writes `report.html` and its PNGs (in `report/`).
///
/// # Errors
/// No run or no training step logged yet, an unreadable `routing.csv`, or a figure that cannot be
/// drawn (no TrueType font: set `$SWITCH_MOE_FONT`).
pub fn write_report(artifact_dir: &Path) -> Result<Report> {
    let run = RunRecord::read(artifact_dir)?;
    let findings = findings(&run);
    plot::init_font().map_err(Error::Data)?;
    let figure_dir = artifact_dir.join("report");
    std::fs::create_dir_all(&figure_dir).map_err(|e| Error::io("cannot create", &figure_dir, e))?;
    let figures = draw(&run, &figure_dir).map_err(Error::Data)?;
    let best = best_epoch(&run);
    let html = artifact_dir.join("report.html");
    let page = page(&run, &findings, best, &figures, artifact_dir);
    crate::atomic_file::write_atomic(&html, page.as_bytes())
        .map_err(|e| Error::io("cannot write", &html, e))?;
    Ok(Report {
        html,
        figures,
        findings,
        best,
    })
}

/// The epoch of lowest validation loss.
fn best_epoch(run: &RunRecord) -> Option<(usize, f64)> {
    run.valid_values("Loss")
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The problems a run shows, each judged on its last epoch (a run that recovered is not flagged).
pub fn findings(run: &RunRecord) -> Vec<Finding> {
    let mut found = Vec::new();
    if let Some(alarm) = run
        .alarms
        .iter()
        .find(|a| a.text.contains("NaN") || a.text.contains("inf"))
    {
        found.push(Finding::NonFinite {
            alarm: alarm.text.clone(),
        });
    }
    let last = run.epochs;
    let threshold = run.config.health.max_load_alarm;
    for layer in run.sparse_layers() {
        let (epochs, fractions) = run.routing_matrix(layer, "train");
        let Some(row) = epochs
            .iter()
            .position(|e| *e == last)
            .map(|i| &fractions[i])
        else {
            continue;
        };
        let e = row.len();
        let threshold = threshold.unwrap_or_else(|| collapse_load(e));
        let load = max_load(row);
        if e > 1 && load >= threshold {
            found.push(Finding::Collapse {
                layer,
                load,
                threshold,
            });
        }
        let dead = dead_in(row);
        if e > 1 && !dead.is_empty() {
            found.push(Finding::DeadExperts {
                layer,
                experts: dead,
            });
        }
    }
    if let Some((_, fraction)) = run.valid_values("Dropped Fraction").last()
        && *fraction > EVAL_DROPS_FLAGGED
    {
        found.push(Finding::EvalDrops {
            fraction: *fraction,
            eval_capacity_factor: run.config.model.encoder.moe().eval_capacity_factor,
        });
    }
    let valid = run.valid_values("Loss");
    if let (Some((best_epoch, best)), Some((last_epoch, last_loss))) =
        (best_epoch(run), valid.last().copied())
    {
        let train_best = run.train_epoch_mean("Loss", best_epoch);
        let train_last = run.train_epoch_mean("Loss", last_epoch);
        let train_fell = matches!((train_best, train_last), (Some(a), Some(b)) if b < a);
        // Rising by more than noise: 0.5% of the best loss, over at least one epoch.
        if last_epoch > best_epoch && last_loss > best * 1.005 && train_fell {
            found.push(Finding::Overfitting {
                best_epoch,
                best,
                last: last_loss,
            });
        }
    }
    found
}

/// Means of consecutive buckets of `values` (about `points` buckets), at the bucket's last step
/// (steps are 1-based); NaN values are skipped.
fn bucket_means(values: &[f64], points: usize) -> Vec<(f64, f64)> {
    let size = values.len().div_ceil(points.max(1)).max(1);
    values
        .chunks(size)
        .enumerate()
        .filter_map(|(i, chunk)| {
            let finite: Vec<f64> = chunk.iter().copied().filter(|v| v.is_finite()).collect();
            let step = (i * size + chunk.len()) as f64;
            (!finite.is_empty()).then(|| (step, finite.iter().sum::<f64>() / finite.len() as f64))
        })
        .collect()
}

/// The figures of a run, written into `dir`.
fn draw(run: &RunRecord, dir: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    const POINTS: usize = 100;
    let mut figures = Vec::new();
    let markers: Vec<Marker> = run
        .alarms
        .iter()
        .map(|a| Marker {
            x: a.step as f64,
            label: format!("alarm @{}", a.step),
        })
        .collect();
    // A train curve (bucket means) and the validation epochs at their end steps.
    let train_and_valid = |metric: &str| -> Vec<Series> {
        let mut series = vec![Series::new(
            "train (mean per bucket of steps)",
            bucket_means(run.train_values(metric), POINTS),
            1,
        )];
        let valid: Vec<(f64, f64)> = run
            .valid_values(metric)
            .iter()
            .map(|(e, v)| (run.epoch_end_step(*e) as f64, *v))
            .collect();
        if !valid.is_empty() {
            series.push(Series::new("valid (epoch mean)", valid, 2));
        }
        series
    };
    figures.extend(line_figure(
        dir,
        "loss.png",
        "Cross-entropy",
        "nats per token",
        train_and_valid("Loss"),
        &markers,
    )?);
    let mut drops = train_and_valid("Dropped Fraction");
    drops[0].label = "dropped, train".into();
    if drops.len() > 1 {
        drops[1].label = "dropped, valid (eval capacity)".into();
    }
    drops.push(Series::new(
        "skipped tokens, train",
        bucket_means(run.train_values("Skipped Fraction"), POINTS),
        3,
    ));
    figures.extend(line_figure(
        dir,
        "drops.png",
        "Dropped assignments and skipped tokens",
        "share",
        drops,
        &[],
    )?);
    let experts = run.config.model.encoder.moe().num_experts;
    let mut entropy = train_and_valid("Router Entropy");
    let last_step = run.train_values("Router Entropy").len().max(1) as f64;
    let uniform = (experts as f64).ln();
    entropy.push(Series::new(
        "ln E (undecided router)",
        vec![(1.0, uniform), (last_step, uniform)],
        8,
    ));
    figures.extend(line_figure(
        dir,
        "entropy.png",
        "Router entropy",
        "nats",
        entropy,
        &[],
    )?);
    figures.extend(line_figure(
        dir,
        "z_loss.png",
        "Router z-loss",
        "mean logsumexp²",
        train_and_valid("Router Z Loss"),
        &[],
    )?);
    let mut load = train_and_valid("Max Expert Load");
    let threshold = run
        .config
        .health
        .max_load_alarm
        .unwrap_or_else(|| collapse_load(experts));
    let steps = run.train_values("Max Expert Load").len().max(1) as f64;
    load.push(Series::new(
        format!("collapse alarm ({threshold:.2})"),
        vec![(1.0, threshold), (steps, threshold)],
        4,
    ));
    figures.extend(line_figure(
        dir,
        "load.png",
        "Max expert load E·max f (1 = balanced)",
        "load",
        load,
        &markers,
    )?);

    for layer in run.sparse_layers() {
        let panels: Vec<Panel> = ["train", "valid"]
            .iter()
            .filter_map(|split| {
                let (epochs, fractions) = run.routing_matrix(layer, split);
                (!epochs.is_empty()).then(|| Panel {
                    title: format!("{split}: token fraction per expert and epoch"),
                    steps: epochs.iter().map(|e| run.epoch_end_step(*e)).collect(),
                    fractions,
                })
            })
            .collect();
        if panels.is_empty() {
            continue;
        }
        let path = dir.join(format!("routing_layer{layer}.png"));
        plot::heatmaps(
            &path,
            &format!("Layer {layer}: expert load per epoch"),
            &panels,
            2,
        )?;
        figures.push(path);
        let (epochs, bias) = run.bias_matrix(layer);
        if bias.iter().flatten().any(|b| *b != 0.0) {
            let experts = bias.first().map_or(0, Vec::len);
            let series: Vec<Series> = (0..experts)
                .map(|x| {
                    let points = epochs
                        .iter()
                        .zip(&bias)
                        .map(|(e, row)| (run.epoch_end_step(*e) as f64, row[x]))
                        .collect();
                    Series::new(format!("expert {x}"), points, x + 1)
                })
                .collect();
            figures.extend(line_figure(
                dir,
                &format!("bias_layer{layer}.png"),
                &format!("Layer {layer}: aux-loss-free selection bias"),
                "bias",
                series,
                &[],
            )?);
        }
    }
    Ok(figures)
}

/// A line chart in `dir/name`, unless every series is empty; returns its path.
fn line_figure(
    dir: &Path,
    name: &str,
    title: &str,
    y: &str,
    series: Vec<Series>,
    markers: &[Marker],
) -> std::result::Result<Option<PathBuf>, String> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Ok(None);
    }
    let path = dir.join(name);
    plot::lines_with_markers(&path, title, "training step", y, &series, None, markers)?;
    Ok(Some(path))
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `report.html`.
fn page(
    run: &RunRecord,
    findings: &[Finding],
    best: Option<(usize, f64)>,
    figures: &[PathBuf],
    artifact_dir: &Path,
) -> String {
    let c = &run.config;
    let moe = c.model.encoder.moe();
    let steps: usize = run.steps_per_epoch.iter().sum();
    let mut html = String::new();
    let title = format!("switch-moe run {}", artifact_dir.display());
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}}\
         img{{max-width:100%;border:1px solid #ddd;margin:.5em 0}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}\
         .warn{{color:#b00}}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let _ = writeln!(
        html,
        "<p>{} layers of d {} ({} sparse × {} experts, top-{}), {} epochs and {} training steps \
         logged (batch {} × seq {}).</p>",
        c.model.encoder.n_layers,
        moe.d_model,
        run.sparse_layers().len(),
        moe.num_experts,
        moe.top_k,
        run.epochs,
        thousands(steps),
        c.batch_size,
        c.model.max_seq_len
    );
    // Summary table: the last epoch's values and the best epoch.
    let _ = writeln!(
        html,
        "<h2>Summary</h2>\n<table><tr><th>epoch</th><th>train loss</th><th>valid loss</th>\
         <th>valid perplexity</th><th>valid dropped</th><th>valid max load</th></tr>"
    );
    for epoch in 1..=run.epochs {
        let valid = |m: &str| {
            run.valid_values(m)
                .iter()
                .find(|(e, _)| *e == epoch)
                .map(|(_, v)| *v)
        };
        let cell = |v: Option<f64>, digits: usize| {
            v.map_or("–".to_string(), |v| format!("{v:.digits$}"))
        };
        let mark = if best.is_some_and(|(b, _)| b == epoch) {
            " (best)"
        } else {
            ""
        };
        let _ = writeln!(
            html,
            "<tr><td>{epoch}{mark}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            cell(run.train_epoch_mean("Loss", epoch), 4),
            cell(valid("Loss"), 4),
            // exp of the epoch's mean cross-entropy: the perplexity of the epoch.
            cell(valid("Loss").map(f64::exp), 2),
            cell(valid("Dropped Fraction").map(|v| 100.0 * v), 2) + "%",
            cell(valid("Max Expert Load"), 3),
        );
    }
    let _ = writeln!(html, "</table>");
    if let Some((epoch, loss)) = best {
        let _ = writeln!(
            html,
            "<p>Best validation loss {loss:.4} (perplexity {:.2}) at epoch {epoch}.</p>",
            loss.exp()
        );
    }
    let _ = writeln!(html, "<h2>Alarms</h2>");
    if run.alarms.is_empty() {
        let _ = writeln!(html, "<p>None fired.</p>");
    } else {
        let _ = writeln!(html, "<ul>");
        for alarm in &run.alarms {
            let _ = writeln!(
                html,
                "<li class=\"warn\">step {}: {}</li>",
                alarm.step,
                escape(&alarm.text)
            );
        }
        let _ = writeln!(html, "</ul>");
    }
    let _ = writeln!(html, "<h2>What the report sees</h2>");
    if findings.is_empty() {
        let _ = writeln!(
            html,
            "<p>Nothing to flag: balanced routing, no dead expert, no drops at the eval capacity, \
             no growing train/valid gap.</p>"
        );
    } else {
        let _ = writeln!(html, "<ul>");
        for finding in findings {
            let _ = writeln!(
                html,
                "<li><b class=\"warn\">{}.</b> {}</li>",
                escape(&finding.headline()),
                escape(finding.advice())
            );
        }
        let _ = writeln!(html, "</ul>");
    }
    let _ = writeln!(html, "<h2>Figures</h2>");
    for figure in figures {
        let name = figure
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(html, "<p><img src=\"report/{name}\" alt=\"{name}\"></p>");
    }
    let _ = writeln!(html, "</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_average_consecutive_steps() {
        let values = [1.0, 3.0, f64::NAN, 5.0, 7.0];
        // 5 values in ~2 buckets of 3: (1, 3, NaN) → 2 at step 3; (5, 7) → 6 at step 5.
        assert_eq!(bucket_means(&values, 2), vec![(3.0, 2.0), (5.0, 6.0)]);
        assert_eq!(escape("<a & b>"), "&lt;a &amp; b&gt;");
    }
}
