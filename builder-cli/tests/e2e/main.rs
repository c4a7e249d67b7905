//! The end-to-end tests of the `ocibuild` command, in one test binary (one link step):
//! each module is one area, run against the test lab (`eval "$(scripts/lab.sh env)"`).
//!
//! Run one area with a name filter, e.g. `cargo test -p ocibuild-cli --test e2e cache::`.
//! The side-by-side conformance suite and the deployment tests are slow: `scripts/test.sh`
//! runs the conformance suite on its own
//! (`cargo test -p ocibuild-cli --test e2e conformance_suite_matches_buildah -- --nocapture`).

mod common;

mod build;
mod cache;
mod cache_faults;
mod conformance;
mod contexts;
mod debian;
mod deploy;
mod executor;
mod faults;
mod habits;
mod help;
mod hostile;
mod interrupts;
mod liveroot;
mod mounts;
mod outputs;
mod progress;
mod prune;
mod push;
mod rootless;
mod sandbox;
mod snapshotters;
mod warm;
