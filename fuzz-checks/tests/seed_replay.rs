//! The fuzz smoke run of CI: every fuzz target's check over its committed seeds
//! (`fuzz/seeds/<target>/`) and a fixed number of deterministic mutants of them.
//!
//! `FUZZ_REPLAY_MUTANTS` sets the mutants per target (default 10,000). A failing input is written
//! to `target/fuzz-replay-failures/<target>-<n>`; `cargo +nightly fuzz run <target> <file>` in
//! `fuzz/` replays it under libFuzzer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use fuzz_checks::mutate::{mutate, Rng};
use fuzz_checks::{Target, TARGETS};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = repo_root().join("fuzz/seeds").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no seed folder {}: {e}", dir.display()))
        .map(|entry| entry.expect("seed folder entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

/// Runs one input; on a panic, saves it and fails with what it was.
fn run_one(target: &Target, input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| (target.check)(input))).is_ok() {
        return;
    }
    let dir = repo_root().join("target/fuzz-replay-failures");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{}-{}", target.name, what.replace(' ', "-")));
    let saved = std::fs::write(&file, input).is_ok();
    panic!(
        "fuzz target {} failed on {what} ({} bytes{}): {:?}",
        target.name,
        input.len(),
        if saved {
            format!(", saved to {}", file.display())
        } else {
            String::new()
        },
        String::from_utf8_lossy(&input[..input.len().min(512)])
    );
}

fn replay(name: &str) {
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} is not in fuzz_checks::TARGETS"));
    let seeds = seeds(name);
    for (i, seed) in seeds.iter().enumerate() {
        run_one(target, seed, &format!("seed {i}"));
    }
    let mutants: usize = std::env::var("FUZZ_REPLAY_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // Seeded by the target's name, so each target walks its own reproducible sequence.
    let mut rng = Rng::new(name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }));
    // Mutants of mutants too, as a corpus grows: keep the last few that differ from their seed.
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    for n in 0..mutants {
        let input = &pool[rng.below(pool.len())];
        let other = &pool[rng.below(pool.len())];
        let mutant = mutate(&mut rng, input, other, target.max_len);
        run_one(target, &mutant, &format!("mutant {n}"));
        if pool.len() < seeds.len() + 64 {
            pool.push(mutant);
        } else {
            let slot = seeds.len() + rng.below(64);
            pool[slot] = mutant;
        }
    }
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        /// A target added to `fuzz/` without a test here (or without seeds) fails this.
        #[test]
        fn every_fuzz_target_has_a_check_seeds_and_a_replay_test() {
            let tested = [$(stringify!($name)),*];
            let mut entries: Vec<String> = std::fs::read_dir(repo_root().join("fuzz/fuzz_targets"))
                .expect("fuzz/fuzz_targets")
                .map(|e| e.expect("entry").path())
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            entries.sort();
            let mut registered: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            registered.sort();
            let mut tested = tested.to_vec();
            tested.sort();
            assert_eq!(entries, registered, "fuzz/fuzz_targets against fuzz_checks::TARGETS");
            assert_eq!(registered, tested, "fuzz_checks::TARGETS against the replay tests");
            for name in &registered {
                assert!(repo_root().join("fuzz/seeds").join(name).is_dir(), "no seeds for {name}");
            }
        }
    };
}

replay_tests!(
    http_request_head,
    jwt_token,
    nats_registration,
    proxy_protocol,
    reservable_ports,
    route_emitter_config,
    route_service_signature,
    routing_api_json,
    routing_api_query,
    sse_frames,
    tls_sni,
);
