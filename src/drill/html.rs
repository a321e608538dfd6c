//! `--report FILE.html`: a self-contained page (no CDN, no script) with the
//! report's figures and a per-second timeline chart drawn with plotters
//! into inline SVG: operations/s and errors/s, p99 on a second axis, the
//! trigger and the promotion marked.

use plotters::prelude::*;

use super::report::Report;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 380;

/// The whole page.
pub fn page(report: &Report) -> Result<String, String> {
    let chart = chart(report)?;
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    let v = &report.verified;
    let verdict = if report.lost_anything {
        "<p class=bad>LOSS: something acknowledged was lost</p>"
    } else {
        "<p class=good>Nothing acknowledged was lost</p>"
    };
    let row = |name: &str, value: String| {
        format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        )
    };
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let mut rows = vec![
        row(
            "trigger",
            format!("{} at {:.1} s", report.trigger, report.triggered_at_s),
        ),
        row(
            "master",
            format!(
                "{} → {}",
                report.old_master.as_deref().unwrap_or("?"),
                report.new_master.as_deref().unwrap_or("?")
            ),
        ),
        row(
            "trigger → promotion",
            format!("{} s", opt(report.promotion_s)),
        ),
        row(
            "operations / errors",
            format!("{} / {}", report.operations, report.errors),
        ),
    ];
    for w in &report.write_failure_windows {
        rows.push(row(
            &format!("failed writes, {}", w.broker),
            format!(
                "{} between {} s and {} s after the trigger",
                w.failed_writes,
                opt(w.from_s),
                opt(w.to_s)
            ),
        ));
    }
    let l = &report.latency_ms;
    for (name, p) in [
        ("before", &l.before),
        ("during", &l.during),
        ("after", &l.after),
    ] {
        rows.push(row(
            &format!("latency {name}"),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms ({} ops)",
                p.p50, p.p99, p.samples
            ),
        ));
    }
    rows.extend([
        row(
            "tokens",
            format!(
                "{} acknowledged, {} missing, {} different",
                v.tokens_acknowledged, v.tokens_missing, v.tokens_different
            ),
        ),
        row(
            "sessions",
            format!(
                "{} acknowledged, {} missing",
                v.sessions_acknowledged, v.sessions_missing
            ),
        ),
        row(
            "chunks",
            format!(
                "{} acknowledged, {} indices duplicated, {} missing",
                v.chunks_acknowledged, v.chunk_indices_duplicated, v.chunks_missing
            ),
        ),
        row(
            "room messages",
            format!(
                "{} published to {} members, {} deliveries missing, {} duplicated, {} refused",
                v.room_messages_published,
                v.room_members,
                v.room_messages_missing,
                v.room_messages_duplicated,
                v.room_publishes_refused
            ),
        ),
        row("WebSockets dropped", v.websockets_dropped.to_string()),
    ]);
    for (kind, n) in &report.errors_by_kind {
        rows.push(row(&format!("errors: {kind}"), n.to_string()));
    }
    Ok(format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>rtc-broker failover drill</title>\n\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse}}\
         th,td{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}}.bad{{color:#b00;font-weight:bold}}\
         .good{{color:#070;font-weight:bold}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>\n\
         <body><h1>Failover drill</h1>\n{verdict}\n<figure>{chart}<figcaption>Per second: operations and errors \
         (left axis), p99 latency in ms (right axis); the trigger and the promotion are marked.</figcaption></figure>\n\
         <table>{}</table>\n<h2>Report (JSON)</h2><pre>{}</pre></body></html>\n",
        rows.join("\n"),
        escape(&json)
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The timeline as an SVG document.
fn chart(report: &Report) -> Result<String, String> {
    let mut svg = String::new();
    draw(report, &mut svg).map_err(|e| format!("cannot draw the timeline: {e}"))?;
    Ok(svg)
}

fn draw(report: &Report, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let t = &report.timeline;
    let seconds = t.len().max(2) as f64 - 1.0;
    let top = t.iter().map(|s| s.ops).max().unwrap_or(1).max(1) as f64 * 1.1;
    let p99_top = t.iter().map(|s| s.p99_ms).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds, 0f64..top)?
        .set_secondary_coord(0f64..seconds, 0f64..p99_top);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("operations / errors per s")
        .draw()?;
    chart.configure_secondary_axes().y_desc("p99 ms").draw()?;
    let points = |f: &dyn Fn(&super::report::Second) -> f64| -> Vec<(f64, f64)> {
        t.iter().map(|s| (s.t as f64, f(s))).collect()
    };
    type Value = fn(&super::report::Second) -> f64;
    let left: [(Value, RGBColor, &str); 2] = [
        (|s| s.ops as f64, BLUE, "ops/s"),
        (|s| s.errors as f64, RED, "errors/s"),
    ];
    for (value, color, label) in left {
        chart
            .draw_series(LineSeries::new(points(&value), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    chart
        .draw_secondary_series(LineSeries::new(
            points(&|s| s.p99_ms),
            GREEN.stroke_width(1),
        ))?
        .label("p99 ms")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GREEN));
    let mut mark =
        |at: f64, color: RGBColor, label: &str| -> Result<(), Box<dyn std::error::Error>> {
            chart
                .draw_series(LineSeries::new(
                    [(at, 0.0), (at, top)],
                    color.stroke_width(2),
                ))?
                .label(label.to_string())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            Ok(())
        };
    mark(report.triggered_at_s, BLACK, "trigger")?;
    if let Some(promotion) = report.promotion_s {
        mark(report.triggered_at_s + promotion, MAGENTA, "promotion")?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
