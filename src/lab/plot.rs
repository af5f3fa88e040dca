//! The library's plots ([`crate::report::plot`]) and the routing panels of an experiment's
//! run log.

pub use crate::report::plot::*;

/// Routing panels of a run: one per sparse layer.
pub fn routing_panels(log: &super::run::RunLog, label: &str) -> Vec<Panel> {
    let layers = log.routing.iter().map(|r| r.layer + 1).max().unwrap_or(0);
    (0..layers)
        .map(|l| {
            let rows: Vec<_> = log.routing.iter().filter(|r| r.layer == l).collect();
            Panel {
                title: format!("{label} · sparse layer {}", l + 1),
                steps: rows.iter().map(|r| r.step).collect(),
                fractions: rows.iter().map(|r| r.fractions.clone()).collect(),
            }
        })
        .collect()
}
