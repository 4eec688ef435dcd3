//! Download and verification progress: byte counts and rate for whoever listens (the health
//! state), a bar on an interactive terminal, and a log line every few seconds otherwise (so
//! `docker logs` shows progress too).
//!
//! This module does NOT know about the health state: the serve command passes a sink.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::health::human_bytes;

/// What is being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Downloading,
    Verifying,
    /// Another process sharing the cache holds the download lock: the bytes are its `.part`
    /// file's size.
    Waiting,
}

/// One progress observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    pub bytes: u64,
    pub total: Option<u64>,
    pub bytes_per_second: f64,
}

/// Receives progress (throttled to a few updates per second).
pub trait ProgressSink: Send + Sync {
    fn report(&self, progress: Progress);
}

/// A sink that ignores everything.
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _: Progress) {}
}

impl<F: Fn(Progress) + Send + Sync> ProgressSink for F {
    fn report(&self, progress: Progress) {
        self(progress)
    }
}

/// How often the sink hears about progress.
const SINK_INTERVAL: Duration = Duration::from_millis(250);
/// How often a log line is written when stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// The window the rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Turns byte counts into throttled reports, a terminal bar, and periodic log lines.
pub(crate) struct Meter<'a> {
    sink: &'a dyn ProgressSink,
    label: String,
    phase: Phase,
    total: Option<u64>,
    state: Mutex<MeterState>,
    bar: Option<ProgressBar>,
}

struct MeterState {
    last_sink: Option<Instant>,
    last_log: Instant,
    /// (time, bytes) samples inside the rate window.
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl<'a> Meter<'a> {
    pub(crate) fn new(
        sink: &'a dyn ProgressSink,
        label: &str,
        phase: Phase,
        total: Option<u64>,
        start: u64,
    ) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let template = match phase {
                Phase::Downloading | Phase::Waiting => {
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
                }
                Phase::Verifying => "{msg} [{bar:30}] {bytes}/{total_bytes}",
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar.set_position(start);
            bar
        });
        let now = Instant::now();
        let mut samples = std::collections::VecDeque::new();
        samples.push_back((now, start));
        Self {
            sink,
            label: label.to_string(),
            phase,
            total,
            state: Mutex::new(MeterState {
                last_sink: None,
                last_log: now,
                samples,
            }),
            bar,
        }
    }

    /// Record that `bytes` (absolute) are done.
    pub(crate) fn update(&self, bytes: u64) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.samples.push_back((now, bytes));
        while st.samples.len() > 2
            && st
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            st.samples.pop_front();
        }
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
        let due = st
            .last_sink
            .is_none_or(|t| now.duration_since(t) >= SINK_INTERVAL);
        if !due {
            return;
        }
        st.last_sink = Some(now);
        let rate = rate(&st.samples);
        self.sink.report(Progress {
            phase: self.phase,
            bytes,
            total: self.total,
            bytes_per_second: rate,
        });
        if self.bar.is_none() && now.duration_since(st.last_log) >= LOG_INTERVAL {
            st.last_log = now;
            let percent = self
                .total
                .filter(|t| *t > 0)
                .map(|t| format!(" ({:.1}%)", bytes as f64 * 100.0 / t as f64))
                .unwrap_or_default();
            let total = self
                .total
                .map(|t| format!(" of {}", human_bytes(t)))
                .unwrap_or_default();
            tracing::info!(
                "{} {}: {}{total}{percent}, {}/s",
                match self.phase {
                    Phase::Downloading => "downloading",
                    Phase::Verifying => "verifying",
                    Phase::Waiting => "another process is downloading",
                },
                self.label,
                human_bytes(bytes),
                human_bytes(rate as u64),
            );
        }
    }

    /// The final count: always reported to the sink.
    pub(crate) fn finish(&self, bytes: u64) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let rate = rate(&st.samples);
        drop(st);
        self.sink.report(Progress {
            phase: self.phase,
            bytes,
            total: self.total,
            bytes_per_second: rate,
        });
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.finish();
        }
    }
}

fn rate(samples: &std::collections::VecDeque<(Instant, u64)>) -> f64 {
    match (samples.front(), samples.back()) {
        (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
            b1.saturating_sub(*b0) as f64 / t1.duration_since(*t0).as_secs_f64()
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[test]
    fn reports_are_throttled_but_the_last_one_always_arrives() {
        let seen = StdMutex::new(Vec::new());
        let sink = |p: Progress| seen.lock().unwrap().push(p.bytes);
        let meter = Meter::new(&sink, "m", Phase::Downloading, Some(1000), 0);
        for b in 1..=1000 {
            meter.update(b);
        }
        meter.finish(1000);
        let seen = seen.into_inner().unwrap();
        assert!(seen.len() < 10, "throttled: {seen:?}");
        assert_eq!(seen.first(), Some(&1));
        assert_eq!(seen.last(), Some(&1000));
    }
}
