//! ocibuild's Dockerfile front end: everything that reads a Dockerfile and its context
//! rules without touching a file system, a sandbox or a registry.
//!
//! - [`parser`]: Dockerfile text to [`Dockerfile`] (instructions with raw arguments, flags
//!   checked, heredocs read), errors naming the line.
//! - [`expand`]: shell-style word expansion of `$VAR`, `${VAR:-default}`, ….
//! - [`pathmatch`]: `.dockerignore` rules and COPY source patterns.
//! - [`mount`]: `RUN --mount=` values to typed [`mount::MountSpec`]s.
//! - [`ir`]: the typed step IR: instructions lowered to [`ir::Op`]s with a stage's
//!   [`ir::Scope`], expansion and flag parsing done once.
//! - [`plan`]: stages, global ARGs, target selection and the stages a target needs.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod expand;
pub mod ir;
pub mod mount;
pub mod parser;
pub mod pathmatch;
pub mod plan;

pub use parser::{parse, Dockerfile, Instruction, InstructionKind, ParseError};
pub use plan::{Plan, PlanError};
