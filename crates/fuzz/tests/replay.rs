//! Every committed fuzz input — the minimized corpus of each target (`fuzz/corpus/<target>/`)
//! and the inputs that once crashed it (`fuzz/regressions/<target>/`) — through the harness the
//! fuzzer runs (`bitnet_fuzz::TARGETS`). Plain `cargo test`; takes seconds.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every file under `fuzz/<kind>/<target>/`; a panic names the file to reproduce with.
fn replay(kind: &str) -> Vec<(&'static str, usize)> {
    let mut counts = Vec::new();
    for (target, run) in bitnet_fuzz::TARGETS {
        let files = inputs(&fuzz_dir().join(kind).join(target));
        for file in &files {
            let data = std::fs::read(file).expect("read a fuzz input");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic!(
                    "fuzz input {} fails its harness `{target}` (see docs/fuzzing.md to \
                     reproduce it under the fuzzer)",
                    file.display()
                );
            }
        }
        counts.push((target, files.len()));
    }
    eprintln!("{kind}: {counts:?}");
    counts
}

#[test]
fn every_corpus_input_passes_its_harness() {
    for (target, n) in replay("corpus") {
        assert!(n > 0, "fuzz/corpus/{target}/ is empty; see docs/fuzzing.md");
    }
}

#[test]
fn every_crash_the_fuzzer_found_stays_fixed() {
    replay("regressions");
}

/// The `gguf` corpus reaches the deepest step of its harness: at least one input is a model
/// that loads and runs, so the fuzzer mutates from there.
#[test]
fn the_gguf_corpus_holds_a_loadable_model() {
    let loads = inputs(&fuzz_dir().join("corpus/gguf")).iter().any(|f| {
        let file = bitnet_gguf::GgufFile::from_bytes(std::fs::read(f).unwrap());
        let options = bitnet_model::LoadOptions {
            threads: 1,
            ..Default::default()
        };
        file.is_ok_and(|file| bitnet_model::Model::load(&file, &options).is_ok())
    });
    assert!(loads, "no input of fuzz/corpus/gguf/ loads as a model");
}
