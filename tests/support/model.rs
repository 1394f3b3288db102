//! The embedded model's cached file for tests that need the real SmolLM2: `None` (a skip with a
//! note) when it is not cached, a failure when `TROUPE_REQUIRE_MODEL` is set (CI sets it after
//! `troupe model fetch`).
#![allow(dead_code)]

use std::path::PathBuf;

use troupe_sim::model::{DEFAULT_MODEL, cache_dir};

/// The cached model file, or `None` (see the module's documentation).
pub fn cached_model() -> Option<PathBuf> {
    let path = cache_dir(None).ok()?.join(DEFAULT_MODEL.file_name);
    if path.is_file() {
        return Some(path);
    }
    let required = std::env::var("TROUPE_REQUIRE_MODEL").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "TROUPE_REQUIRE_MODEL is set but there is no model at {}; run `troupe model fetch`",
        path.display()
    );
    eprintln!(
        "note: skipped: no model at {} (run `troupe model fetch`, or set TROUPE_REQUIRE_MODEL=1 to make this a failure)",
        path.display()
    );
    None
}
