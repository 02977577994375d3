//! Progress bars (indicatif) on stderr for long work: the copy (bytes and rows in total,
//! tables done, ETA), verify (tables and rows) and a catch-up (the bytes the apply still
//! has to go). Only when stderr is a terminal and output is not JSON; otherwise nothing is
//! drawn and the plain lines are printed as before, so logs and pipes stay line by line.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgtransit::catalog::pretty_bytes;
use pgtransit::snapshot::CopyProgress;

/// Whether to draw bars: stderr is a terminal (not dumb) and the output is not JSON.
pub fn wanted(json: bool) -> bool {
    !json && std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Where bars go: stderr when `wanted`, nowhere otherwise.
pub fn target(json: bool) -> ProgressDrawTarget {
    if wanted(json) {
        ProgressDrawTarget::stderr_with_hz(10)
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// The copy: percent of the planned bytes (in tenths), with rows, bytes, units and the ETA
/// the copy itself computes (it knows the table sizes; indicatif's own estimate would
/// follow the bar's steps).
pub struct CopyBar(ProgressBar);

impl CopyBar {
    pub fn new(draw: ProgressDrawTarget) -> CopyBar {
        let bar = ProgressBar::with_draw_target(Some(1000), draw);
        bar.set_style(
            ProgressStyle::with_template("copy   [{bar:20}] {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        CopyBar(bar)
    }

    /// The copy's totals as its Progress event gives them.
    pub fn update(&self, p: &CopyProgress) {
        self.0
            .set_position((p.percent * 10.0).clamp(0.0, 1000.0) as u64);
        self.0.set_message(format!(
            "{:>3.0}%  {} rows  {}  {}/{} tables{}",
            p.percent,
            p.rows,
            pretty_bytes(p.bytes as i64),
            p.units_done,
            p.units_total,
            match p.eta_seconds {
                Some(s) => format!("  ETA {}", duration_text(s)),
                None => String::new(),
            }
        ));
    }

    /// A line above the bar (a table done, a message).
    pub fn println(&self, line: &str) {
        self.0.println(line);
    }

    /// Remove the bar (the lines above it stay).
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Counted work, such as verify's tables: `done/total` with rows in the message.
pub fn count_bar(draw: ProgressDrawTarget, what: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), draw);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what:<6} [{{bar:20}}] {{pos}}/{{len}} {{msg}} ({{elapsed}})"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// A catch-up: how many of the bytes of lag at the start have been applied.
pub fn catch_up_bar(draw: ProgressDrawTarget, lag_bytes: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(lag_bytes.max(1)), draw);
    bar.set_style(
        ProgressStyle::with_template(
            "apply  [{bar:20}] {bytes}/{total_bytes} of the lag applied, ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn duration_text(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use indicatif::TermLike;

    use super::*;

    /// An 80-column terminal that keeps the last line drawn.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn last(screen: &Screen) -> String {
        screen
            .0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn the_copy_bar_renders_totals_and_eta_in_80_columns() {
        let screen = Screen::default();
        let bar = CopyBar::new(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        bar.update(&CopyProgress {
            units_done: 3,
            units_total: 7,
            rows: 1_234_567,
            bytes: 300 * 1024 * 1024,
            percent: 42.0,
            bytes_per_second: 0.0,
            eta_seconds: Some(95.0),
        });
        // abandon() draws at once (whatever the draw rate limit) and keeps the position.
        bar.0.abandon();
        let line = last(&screen);
        assert!(line.starts_with("copy   [========>"), "{line:?}");
        assert!(
            line.contains(" 42%  1234567 rows  300 MB  3/7 tables  ETA 1m35s"),
            "{line:?}"
        );
        assert!(line.chars().count() <= 80, "{line:?}");
    }

    #[test]
    fn count_and_catch_up_bars_render() {
        let screen = Screen::default();
        let bar = count_bar(
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
            "verify",
            12,
        );
        bar.set_position(5);
        bar.set_message("52000 rows");
        bar.abandon();
        assert!(
            last(&screen).contains("5/12 52000 rows"),
            "{:?}",
            screen.0.lock().unwrap()
        );
        let screen = Screen::default();
        let bar = catch_up_bar(
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
            10 * 1024 * 1024,
        );
        bar.set_position(5 * 1024 * 1024);
        bar.abandon();
        assert!(
            last(&screen).contains("5.00 MiB/10.00 MiB of the lag applied"),
            "{:?}",
            last(&screen)
        );
    }
}
