//! The Prometheus text format for clients that do not ask for
//! OpenMetrics.
//!
//! prometheus-client writes OpenMetrics, where a counter's family is named
//! without the `_total` its samples carry. Prometheus itself asks for
//! OpenMetrics and reads that; `promtool check metrics`, curl users and
//! older scrapers read the classic text format (0.0.4), where the family
//! is named as its samples are. Both the runtime and the host proxy serve
//! OpenMetrics to whoever asks for it by `Accept`, and this rewrite to
//! everyone else.

/// The content type of the classic text format.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a request's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text (as prometheus-client writes it: counters, gauges,
/// histograms) in the classic text format: counter families named with
/// `_total`, no `# UNIT` and no `# EOF`.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            // Held until the TYPE line says whether the name changes.
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let renamed = match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                _ => name.to_string(),
            };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.strip_prefix(name))
                    .unwrap_or("");
                out.push_str(&format!("# HELP {renamed}{text}\n"));
            }
            out.push_str(&format!("# TYPE {renamed} {kind}\n"));
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_their_samples_and_the_rest_is_kept() {
        let om = "# HELP a Requests.\n# TYPE a counter\na_total{g=\"x\"} 7\n\
                  # HELP b_seconds Time.\n# TYPE b_seconds histogram\n# UNIT b_seconds seconds\n\
                  b_seconds_sum 0.5\nb_seconds_count 1\nb_seconds_bucket{le=\"+Inf\"} 1\n\
                  # HELP c Now.\n# TYPE c gauge\nc 3\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP a_total Requests.\n# TYPE a_total counter\na_total{g=\"x\"} 7\n\
             # HELP b_seconds Time.\n# TYPE b_seconds histogram\n\
             b_seconds_sum 0.5\nb_seconds_count 1\nb_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP c Now.\n# TYPE c gauge\nc 3\n"
        );
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")) && !wants_openmetrics(None));
    }
}
